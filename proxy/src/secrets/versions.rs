//! Which Key Vault versions of a secret are accepted, from their attributes and from what this
//! process has already seen of them.
//!
//! Key Vault's `created` has one-second resolution, so two versions written within a second
//! tie. Versions are ranked once, when first seen, and keep that rank:
//! - by `created`;
//! - in a tie, a version first seen in a later load is newer (it did not exist before);
//! - in a tie within one load (always the case at start), the vault's latest version is newer,
//!   then the later `updated`, then the greater version id, so a restart settles a tie the same
//!   way every time.
//!
//! A version ranked below the current one has been superseded: it is never current again in
//! this process, whatever appears, expires or is disabled later. It stays accepted only for the
//! rotation overlap after the version above it was created.

use std::collections::{HashMap, HashSet};

/// One version as listed, without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VersionInfo {
    pub(crate) version: String,
    pub(crate) enabled: bool,
    pub(crate) created: i64,
    pub(crate) updated: i64,
    pub(crate) not_before: Option<i64>,
    pub(crate) expires: Option<i64>,
}

impl VersionInfo {
    fn valid_at(&self, now: i64) -> bool {
        self.enabled
            && self.not_before.is_none_or(|nbf| nbf <= now)
            && self.expires.is_none_or(|exp| now < exp)
    }
}

/// What this process remembers of one secret's versions.
#[derive(Debug, Default)]
pub(crate) struct History {
    /// Version ids, oldest first, in the rank they were given when first seen.
    ranked: Vec<String>,
    /// Versions that a newer valid version replaced as current, with the `created` of the
    /// version that was current when that was first seen: a window never grows later.
    superseded: HashMap<String, i64>,
}

impl History {
    /// Ranks the versions not seen before and forgets those no longer listed.
    fn rank(&mut self, versions: &[VersionInfo], latest: Option<&str>) {
        let listed: HashSet<&str> = versions.iter().map(|v| v.version.as_str()).collect();
        self.ranked.retain(|id| listed.contains(id.as_str()));
        self.superseded.retain(|id, _| listed.contains(id.as_str()));
        let created = |id: &str| versions.iter().find(|v| v.version == id).map(|v| v.created);
        let mut new: Vec<&VersionInfo> =
            versions.iter().filter(|v| !self.ranked.contains(&v.version)).collect();
        new.sort_by(|a, b| {
            let key = |v: &VersionInfo| (v.created, Some(v.version.as_str()) == latest, v.updated);
            key(a).cmp(&key(b)).then_with(|| a.version.cmp(&b.version))
        });
        for version in new {
            // After every version created no later: a tie with one seen before goes above it.
            let at = self
                .ranked
                .iter()
                .rposition(|id| created(id).is_some_and(|c| c <= version.created))
                .map_or(0, |i| i + 1);
            self.ranked.insert(at, version.version.clone());
        }
    }

    fn position(&self, id: &str) -> usize {
        self.ranked.iter().position(|r| r == id).unwrap_or(0)
    }
}

/// The versions to accept at `now` (epoch seconds), current first, each with the time it stops
/// being accepted; empty when no valid version may be current. Updates `history`.
pub(crate) fn accepted(
    history: &mut History,
    versions: &[VersionInfo],
    latest: Option<&str>,
    now: i64,
    overlap: i64,
) -> Vec<(String, Option<i64>)> {
    history.rank(versions, latest);
    let mut valid: Vec<&VersionInfo> = versions.iter().filter(|v| v.valid_at(now)).collect();
    valid.sort_by_key(|v| std::cmp::Reverse(history.position(&v.version)));
    let Some(current) = valid.iter().position(|v| !history.superseded.contains_key(&v.version))
    else {
        return Vec::new();
    };
    // Everything ranked below the current version has now been superseded.
    let (floor, replaced_at) = (history.position(&valid[current].version), valid[current].created);
    for id in &history.ranked[..floor] {
        history.superseded.entry(id.clone()).or_insert(replaced_at);
    }

    let mut out = vec![(valid[current].version.clone(), valid[current].expires)];
    for pair in valid[current..].windows(2) {
        let (newer, older) = (pair[0], pair[1]);
        let replaced_at = history
            .superseded
            .get(&older.version)
            .map_or(newer.created, |at| (*at).min(newer.created));
        let until = replaced_at.saturating_add(overlap);
        let until = older.expires.map_or(until, |exp| exp.min(until));
        if until <= now {
            break;
        }
        out.push((older.version.clone(), Some(until)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(version: &str, created: i64) -> VersionInfo {
        VersionInfo {
            version: version.into(),
            enabled: true,
            created,
            updated: created,
            not_before: None,
            expires: None,
        }
    }

    fn expired(version: &str, created: i64, exp: i64) -> VersionInfo {
        VersionInfo { expires: Some(exp), ..v(version, created) }
    }

    fn choose(
        versions: &[VersionInfo],
        latest: Option<&str>,
        now: i64,
        overlap: i64,
    ) -> Vec<(String, Option<i64>)> {
        accepted(&mut History::default(), versions, latest, now, overlap)
    }

    #[test]
    fn the_newest_valid_version_is_current_and_the_one_it_replaced_overlaps() {
        let versions = [v("a", 100), v("c", 300), v("b", 200)];
        assert_eq!(choose(&versions, None, 310, 50), [("c".into(), None), ("b".into(), Some(350))]);
        // Past the overlap only the current version is accepted.
        assert_eq!(choose(&versions, None, 360, 50), [("c".into(), None)]);
        // The oldest was replaced at 200: its window ended at 250, before b's.
        assert_eq!(choose(&versions, None, 240, 50).len(), 3);
    }

    #[test]
    fn disabled_expired_and_future_versions_are_never_accepted() {
        let mut disabled = v("new", 300);
        disabled.enabled = false;
        let mut future = v("nbf", 400);
        future.not_before = Some(1000);
        let versions = [v("old", 100), disabled, expired("exp", 250, 305), future];
        // "new" is disabled and "nbf" not yet valid: "exp" is current until it expires.
        assert_eq!(
            choose(&versions, None, 290, 50),
            [("exp".into(), Some(305)), ("old".into(), Some(300))]
        );
        // A fresh process (a restart) that never saw "exp" current takes "old".
        assert_eq!(choose(&versions, None, 306, 1000), [("old".into(), None)]);
        assert!(choose(&[], None, 0, 0).is_empty());
    }

    #[test]
    fn the_vault_s_latest_version_wins_a_tie_in_created() {
        let versions = [v("first", 100), v("second", 100)];
        let chosen = choose(&versions, Some("second"), 100, 60);
        assert_eq!(chosen, [("second".into(), None), ("first".into(), Some(160))]);
        assert_eq!(choose(&versions, Some("first"), 100, 60)[0].0, "first");
    }

    #[test]
    fn a_tie_stays_settled_when_a_newer_version_expired_on_arrival() {
        // Two versions within one second (the second is the vault's latest and current), then
        // a third whose `exp` has already passed becomes the latest.
        let mut history = History::default();
        let (v1, v2) = (v("b-first", 100), v("a-second", 100));
        let first = accepted(&mut history, &[v1.clone(), v2.clone()], Some("a-second"), 100, 60);
        assert_eq!(first[0].0, "a-second");
        let v3 = expired("c-third", 101, 90);
        for now in [101, 161, 500] {
            let chosen = accepted(
                &mut history,
                &[v1.clone(), v2.clone(), v3.clone()],
                Some("c-third"),
                now,
                60,
            );
            assert_eq!(chosen[0], ("a-second".into(), None), "at {now}");
            assert_eq!(chosen.len(), usize::from(now < 160) + 1, "at {now}");
        }
    }

    #[test]
    fn a_superseded_version_is_never_current_again_in_this_process() {
        let mut history = History::default();
        let old = v("old", 100);
        assert_eq!(
            accepted(&mut history, std::slice::from_ref(&old), Some("old"), 100, 60)[0].0,
            "old"
        );
        let new = v("new", 200);
        assert_eq!(
            accepted(&mut history, &[old.clone(), new.clone()], Some("new"), 200, 60)[0].0,
            "new"
        );
        // The new version is disabled: the superseded one does not come back, not even in
        // its overlap; the secret has no current version.
        let disabled = VersionInfo { enabled: false, ..new };
        assert!(accepted(&mut history, &[old.clone(), disabled.clone()], Some("new"), 210, 60)
            .is_empty());
        // A newer version (a rollback writes the old value again) is current at once; the
        // superseded one's window still ends 60 s after it was first replaced.
        let again = v("again", 300);
        let chosen = accepted(&mut history, &[old, disabled, again], Some("again"), 300, 60);
        assert_eq!(chosen, [("again".into(), None)]);
    }

    #[test]
    fn a_version_first_seen_later_is_newer_in_a_tie() {
        let mut history = History::default();
        // The id order and the vault's latest (a disabled latest answers 403: none) would both
        // put "a" below "z": being seen later decides.
        accepted(&mut history, &[v("z", 100)], Some("z"), 100, 60);
        let chosen = accepted(&mut history, &[v("z", 100), v("a", 100)], None, 100, 60);
        assert_eq!(chosen[0].0, "a");
    }

    #[test]
    fn a_restart_settles_ties_the_same_way_every_time() {
        let versions = [v("x", 100), v("y", 100), v("w", 100), expired("later", 101, 50)];
        let first = choose(&versions, Some("later"), 120, 60);
        let mut reversed = versions.clone();
        reversed.reverse();
        assert_eq!(choose(&reversed, Some("later"), 120, 60), first);
        assert_eq!(first[0].0, "y", "the greatest id among the tied");
    }

    #[test]
    fn an_overlap_never_outlives_the_version_s_own_expiry() {
        let old = expired("old", 100, 220);
        assert_eq!(choose(&[old, v("new", 200)], None, 210, 1000)[1], ("old".into(), Some(220)));
    }
}
