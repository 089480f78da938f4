//! Deterministic health records: the same domain and date always yield the same document.
//!
//! Shapes follow Biotrackr's documents, `{Id, Date, DocumentType, <payload>}`, with the payloads
//! from [`super::payloads`]. The covered days are 2024-01-01 through 2026-12-31.

use serde_json::{json, Value};

use super::calendar::Day;
use super::payloads;

/// A record family; also the first path segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Domain {
    Activity,
    Sleep,
    Food,
    Vitals,
}

impl Domain {
    pub(crate) fn from_segment(segment: &str) -> Option<Self> {
        match segment {
            "activity" => Some(Self::Activity),
            "sleep" => Some(Self::Sleep),
            "food" => Some(Self::Food),
            "vitals" => Some(Self::Vitals),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Activity => "activity",
            Self::Sleep => "sleep",
            Self::Food => "food",
            Self::Vitals => "vitals",
        }
    }

    fn document_type(self) -> &'static str {
        match self {
            Self::Activity => "Activity",
            Self::Sleep => "Sleep",
            Self::Food => "Food",
            Self::Vitals => "Vitals",
        }
    }

    fn salt(self) -> u64 {
        match self {
            Self::Activity => 0xA11C_E5ED,
            Self::Sleep => 0x5EE9_0000,
            Self::Food => 0xF00D_F00D,
            Self::Vitals => 0x0B17_A150,
        }
    }
}

/// The first day with data: 2024-01-01.
pub(crate) fn first_day() -> Day {
    Day::from_civil(2024, 1, 1)
}

/// The last day with data: 2026-12-31.
pub(crate) fn last_day() -> Day {
    Day::from_civil(2026, 12, 31)
}

/// Whether `day` has a record (every domain covers the same days).
pub(crate) fn covers(day: Day) -> bool {
    (first_day()..=last_day()).contains(&day)
}

/// The document for `domain` on `day`. Callers check [`covers`] first.
pub(crate) fn document(domain: Domain, day: Day) -> Value {
    let mut rng = Rng::new(domain, day);
    let date = day.to_string();
    let mut doc = json!({
        "Id": rng.uuid(),
        "Date": date,
        "DocumentType": domain.document_type(),
    });
    let fields = match domain {
        Domain::Activity => json!({ "Activity": payloads::activity(day, &mut rng) }),
        Domain::Sleep => json!({ "Sleep": payloads::sleep(day, &mut rng) }),
        Domain::Food => json!({ "Food": payloads::food(day, &mut rng) }),
        Domain::Vitals => payloads::vitals(day, &mut rng),
    };
    if let (Some(doc), Value::Object(fields)) = (doc.as_object_mut(), fields) {
        doc.extend(fields);
    }
    doc
}

/// splitmix64, seeded from the domain and the day: cheap, stable across platforms and versions.
#[derive(Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    fn new(domain: Domain, day: Day) -> Self {
        let mut rng = Self(domain.salt() ^ (day.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        rng.next();
        rng
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn int(&mut self, lo: i64, hi: i64) -> i64 {
        let span = u64::try_from(hi - lo + 1).unwrap_or(1);
        lo + i64::try_from(self.next() % span).unwrap_or(0)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly normal (Irwin-Hall of four), mean 0, standard deviation `sd`.
    pub(crate) fn noise(&mut self, sd: f64) -> f64 {
        let sum: f64 = (0..4).map(|_| self.unit()).sum();
        (sum - 2.0) * sd * 3f64.sqrt()
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[usize::try_from(self.int(0, items.len() as i64 - 1)).unwrap_or(0)]
    }

    pub(crate) fn log_id(&mut self) -> u64 {
        30_000_000_000 + self.next() % 9_000_000_000
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_deterministic_and_shaped() {
        let day = Day::from_civil(2025, 2, 2);
        for domain in [Domain::Activity, Domain::Sleep, Domain::Food, Domain::Vitals] {
            let doc = document(domain, day);
            assert_eq!(doc, document(domain, day));
            assert_eq!(doc["Date"], "2025-02-02");
            assert_eq!(doc["DocumentType"], domain.document_type());
            assert_eq!(doc["Id"].as_str().map(str::len), Some(36));
        }
        assert_ne!(
            document(Domain::Activity, day)["Id"],
            document(Domain::Activity, day.pred())["Id"]
        );
    }

    #[test]
    fn payloads_are_internally_consistent() {
        for offset in 0..400 {
            let day = Day(first_day().0 + offset * 2);
            let sleep = &document(Domain::Sleep, day)["Sleep"];
            let stages = &sleep["summary"]["stages"];
            let sum: i64 =
                ["deep", "light", "rem", "wake"].iter().map(|s| stages[s].as_i64().unwrap()).sum();
            assert_eq!(sum, sleep["summary"]["totalTimeInBed"].as_i64().unwrap());
            let efficiency = sleep["sleep"][0]["efficiency"].as_i64().unwrap();
            assert!((60..=100).contains(&efficiency), "{efficiency}");

            let activity = &document(Domain::Activity, day)["Activity"]["summary"];
            let zones: i64 = activity["heartRateZones"]
                .as_array()
                .unwrap()
                .iter()
                .map(|z| z["minutes"].as_i64().unwrap())
                .sum();
            assert!(zones <= 1440);
            assert!(activity["sedentaryMinutes"].as_i64().unwrap() > 0);
            assert!(activity["steps"].as_i64().unwrap() >= 1_500);

            let food = &document(Domain::Food, day)["Food"];
            let calories: f64 = food["foods"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["nutritionalValues"]["calories"].as_f64().unwrap())
                .sum();
            let total = food["summary"]["calories"].as_f64().unwrap();
            assert!((calories - total).abs() <= 3.0, "{calories} vs {total}");

            let vitals = document(Domain::Vitals, day);
            let weight = vitals["Weight"]["weight"].as_f64().unwrap();
            assert!((70.0..95.0).contains(&weight), "{weight}");
            assert_eq!(vitals["Provider"], "Withings");
        }
    }

    #[test]
    fn coverage_is_2024_through_2026() {
        assert!(covers(Day::from_civil(2024, 1, 1)));
        assert!(covers(Day::from_civil(2026, 12, 31)));
        assert!(!covers(Day::from_civil(2023, 12, 31)));
        assert!(!covers(Day::from_civil(2027, 1, 1)));
        assert_eq!(last_day().0 - first_day().0 + 1, 1096);
    }
}
