//! The Fitbit-shaped (activity, sleep, food) and Withings-shaped (vitals) payloads.
//!
//! Plausible for one adult, with a weekly rhythm and day-to-day noise, and internally
//! consistent: sleep stage minutes add up to time in bed, food totals are the sum of the logged
//! foods, heart-rate zone minutes fit in a day.

use serde_json::{json, Value};

use super::calendar::Day;
use super::records::{first_day, Rng};

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

fn is_weekend(day: Day) -> bool {
    day.weekday() >= 5
}

/// `yyyy-MM-ddTHH:mm:ss.000` for `minutes` after midnight at the start of `day`.
fn timestamp(day: Day, minutes: i64) -> String {
    let day = Day(day.0 + minutes.div_euclid(1440));
    let minutes = minutes.rem_euclid(1440);
    format!("{day}T{:02}:{:02}:00.000", minutes / 60, minutes % 60)
}

/// A loggable exercise: Fitbit activity id (also its parent's), name, and per-minute rates.
struct Exercise {
    id: u64,
    name: &'static str,
    kcal_per_min: f64,
    steps_per_min: i64,
    km_per_min: f64,
}

const fn exercise(id: u64, name: &'static str, kcal: f64, steps: i64, km: f64) -> Exercise {
    Exercise { id, name, kcal_per_min: kcal, steps_per_min: steps, km_per_min: km }
}

const EXERCISES: &[Exercise] = &[
    exercise(90013, "Walk", 4.8, 105, 0.08),
    exercise(90009, "Run", 11.5, 165, 0.18),
    exercise(90001, "Bike", 8.2, 0, 0.35),
    exercise(3001, "Aerobic Workout", 7.0, 40, 0.0),
    exercise(2131, "Weights", 5.1, 10, 0.0),
    exercise(52001, "Yoga", 3.2, 0, 0.0),
];

pub(crate) fn activity(day: Day, rng: &mut Rng) -> Value {
    let weekend = is_weekend(day);
    let (first, last) = if weekend { (7, 16) } else { (6, 19) };
    let mut exercises = Vec::new();
    let (mut logged_steps, mut logged_km, mut logged_kcal) = (0i64, 0f64, 0f64);
    for _ in 0..rng.int(0, 2) {
        let exercise = rng.pick(EXERCISES);
        let minutes = rng.int(20, 75);
        let steps = exercise.steps_per_min * minutes;
        let km = round(exercise.km_per_min * minutes as f64, 2);
        let kcal = (exercise.kcal_per_min * minutes as f64).round();
        let start = rng.int(first, last) * 60 + rng.int(0, 3) * 15;
        logged_steps += steps;
        logged_km += km;
        logged_kcal += kcal;
        exercises.push(json!({
            "activityId": exercise.id,
            "activityParentId": exercise.id,
            "activityParentName": exercise.name,
            "calories": kcal,
            "description": "",
            "distance": km,
            "duration": minutes * 60_000,
            "hasActiveZoneMinutes": true,
            "hasStartTime": true,
            "isFavorite": false,
            "lastModified": timestamp(day, start + minutes + 5),
            "logId": rng.log_id(),
            "name": exercise.name,
            "startDate": day.to_string(),
            "startTime": format!("{:02}:{:02}", start / 60, start % 60),
            "steps": steps,
        }));
    }

    let base = if weekend { 7_200.0 } else { 9_100.0 };
    let steps = ((base + rng.noise(2_400.0)).max(1_500.0) as i64) + logged_steps;
    let total_km = round(steps as f64 * 0.000_76, 2);
    let very = rng.int(0, 25) + logged_steps / 200;
    let fairly = rng.int(5, 40);
    let lightly = rng.int(150, 300);
    let sedentary = 1440 - rng.int(400, 500) - very - fairly - lightly;
    let bmr = 1_760 + rng.int(-8, 8);
    let activity_kcal = (steps as f64 * 0.042
        + very as f64 * 7.5
        + fairly as f64 * 4.5
        + lightly as f64 * 2.1
        + logged_kcal * 0.3)
        .round() as i64;
    let floors = rng.int(2, 24);
    let resting = 57 + rng.int(-3, 4);
    let peak = rng.int(0, very / 3);
    let cardio = (very - peak).max(0) + rng.int(0, 8);
    let fat_burn = fairly + lightly / 5 + rng.int(0, 20);
    let not_worn = rng.int(0, 60);
    let out_of_range = 1440 - peak - cardio - fat_burn - not_worn;
    let zone = |name: &str, min: i64, max: i64, minutes: i64, kcal_per_min: f64| {
        json!({
            "caloriesOut": round(minutes as f64 * kcal_per_min, 4),
            "max": max,
            "min": min,
            "minutes": minutes,
            "name": name,
        })
    };
    let split = |km: f64, share: f64| round(km * share, 2);
    let tracker_km = round(total_km - logged_km * 0.5, 2).max(0.0);
    json!({
        "activities": exercises,
        "goals": {
            "activeMinutes": 30,
            "caloriesOut": 2_900,
            "distance": 8.05,
            "floors": 10,
            "steps": 10_000,
        },
        "summary": {
            "activeScore": -1,
            "activityCalories": activity_kcal,
            "calorieEstimationMu": 2_418,
            "caloriesBMR": bmr,
            "caloriesOut": bmr + activity_kcal,
            "caloriesOutUnestimated": bmr + activity_kcal,
            "distances": [
                { "activity": "total", "distance": total_km },
                { "activity": "tracker", "distance": tracker_km },
                { "activity": "loggedActivities", "distance": round(logged_km, 2) },
                { "activity": "veryActive", "distance": split(total_km, 0.28) },
                { "activity": "moderatelyActive", "distance": split(total_km, 0.17) },
                { "activity": "lightlyActive", "distance": split(total_km, 0.52) },
                { "activity": "sedentaryActive", "distance": split(total_km, 0.01) },
            ],
            "elevation": round(floors as f64 * 3.048, 2),
            "fairlyActiveMinutes": fairly,
            "floors": floors,
            "heartRateZones": [
                zone("Out of Range", 30, 97, out_of_range, 1.25),
                zone("Fat Burn", 97, 136, fat_burn, 5.6),
                zone("Cardio", 136, 165, cardio, 9.8),
                zone("Peak", 165, 220, peak, 12.4),
            ],
            "lightlyActiveMinutes": lightly,
            "marginalCalories": (activity_kcal as f64 * 0.56).round(),
            "restingHeartRate": resting,
            "sedentaryMinutes": sedentary,
            "steps": steps,
            "useEstimation": true,
            "veryActiveMinutes": very,
        },
    })
}

pub(crate) fn sleep(day: Day, rng: &mut Rng) -> Value {
    // Bedtime on the evening before `day` (the "date of sleep" is the morning it ends).
    let weekend_night = day.weekday() >= 5;
    let bedtime = if weekend_night { 23 * 60 + 20 } else { 22 * 60 + 40 } + rng.int(-30, 60);
    let target_in_bed = (if weekend_night { 500 } else { 455 }) + rng.int(-45, 45);

    // Stage segments: a short settle, then ~90-minute cycles of light, deep, light, REM, with
    // brief awakenings; deep shrinks and REM grows through the night.
    let mut segments: Vec<(&str, i64)> = vec![("wake", rng.int(3, 15))];
    let mut elapsed = segments[0].1;
    let mut cycle = 0;
    while elapsed < target_in_bed {
        let plan = [
            ("light", rng.int(15, 35)),
            ("deep", (rng.int(15, 40) - cycle * 6).max(4)),
            ("light", rng.int(10, 25)),
            ("rem", rng.int(8, 20) + cycle * 5),
            ("wake", rng.int(1, 6)),
        ];
        for (level, minutes) in plan {
            let minutes = minutes.min(target_in_bed - elapsed);
            if minutes <= 0 {
                break;
            }
            segments.push((level, minutes));
            elapsed += minutes;
        }
        cycle += 1;
    }
    let time_in_bed = elapsed;
    let start = bedtime;
    let mut data = Vec::with_capacity(segments.len());
    let mut at = start;
    for (level, minutes) in &segments {
        data.push(json!({
            "dateTime": timestamp(day.pred(), at),
            "level": level,
            "seconds": minutes * 60,
        }));
        at += minutes;
    }
    let stage = |name: &str| -> (i64, i64) {
        segments
            .iter()
            .filter(|(level, _)| *level == name)
            .fold((0, 0), |(count, total), (_, minutes)| (count + 1, total + minutes))
    };
    let (deep, light, rem, wake) = (stage("deep"), stage("light"), stage("rem"), stage("wake"));
    let asleep = deep.1 + light.1 + rem.1;
    let summary = |(count, minutes): (i64, i64), average: i64| {
        let mut summary = serde_json::Map::new();
        summary.insert("count".into(), count.into());
        summary.insert("minutes".into(), minutes.into());
        summary.insert("thirtyDayAvgMinutes".into(), average.into());
        Value::Object(summary)
    };
    let efficiency = (asleep * 100 + time_in_bed / 2) / time_in_bed.max(1);
    json!({
        "sleep": [{
            "dateOfSleep": day.to_string(),
            "duration": time_in_bed * 60_000,
            "efficiency": efficiency,
            "endTime": timestamp(day.pred(), start + time_in_bed),
            "infoCode": 0,
            "isMainSleep": true,
            "levels": {
                "data": data,
                "shortData": [],
                "summary": {
                    "deep": summary(deep, 78),
                    "light": summary(light, 236),
                    "rem": summary(rem, 96),
                    "wake": summary(wake, 54),
                },
            },
            "logId": rng.log_id(),
            "logType": "auto_detected",
            "minutesAfterWakeup": segments.last().map_or(0, |(level, minutes)| {
                if *level == "wake" { *minutes } else { 0 }
            }),
            "minutesAsleep": asleep,
            "minutesAwake": wake.1,
            "minutesToFallAsleep": segments[0].1,
            "startTime": timestamp(day.pred(), start),
            "timeInBed": time_in_bed,
            "type": "stages",
        }],
        "summary": {
            "stages": { "deep": deep.1, "light": light.1, "rem": rem.1, "wake": wake.1 },
            "totalMinutesAsleep": asleep,
            "totalSleepRecords": 1,
            "totalTimeInBed": time_in_bed,
        },
    })
}

/// A Fitbit food unit: id, name, plural.
type Unit = (u32, &'static str, &'static str);

const SERVING: Unit = (304, "serving", "servings");
const CUP: Unit = (226, "cup", "cups");
const SLICE: Unit = (311, "slice", "slices");
const OZ: Unit = (389, "oz", "oz");

/// A food with its nutrition per unit: kcal, carbs, fat, fiber, protein (g), sodium (mg).
struct Food {
    name: &'static str,
    brand: &'static str,
    unit: Unit,
    per_unit: [f64; 6],
}

const fn item(name: &'static str, brand: &'static str, unit: Unit, per_unit: [f64; 6]) -> Food {
    Food { name, brand, unit, per_unit }
}

const BREAKFASTS: &[Food] = &[
    item("Oatmeal with Blueberries", "", SERVING, [310.0, 54.0, 6.0, 8.0, 10.0, 120.0]),
    item("Greek Yogurt, Plain", "Fage", CUP, [190.0, 8.0, 10.0, 0.0, 18.0, 70.0]),
    item("Scrambled Eggs", "", SERVING, [200.0, 2.0, 15.0, 0.0, 13.0, 340.0]),
    item("Wholemeal Toast with Peanut Butter", "", SLICE, [260.0, 24.0, 14.0, 4.0, 11.0, 260.0]),
    item("Banana", "", SERVING, [105.0, 27.0, 0.4, 3.1, 1.3, 1.0]),
];
const LUNCHES: &[Food] = &[
    item("Chicken Caesar Salad", "", SERVING, [470.0, 14.0, 30.0, 3.0, 37.0, 910.0]),
    item("Turkey and Avocado Sandwich", "", SERVING, [520.0, 45.0, 22.0, 7.0, 32.0, 1050.0]),
    item("Lentil Soup", "", CUP, [230.0, 36.0, 4.0, 15.0, 16.0, 780.0]),
    item("Sushi, Salmon Nigiri", "", SERVING, [380.0, 56.0, 7.0, 1.0, 22.0, 650.0]),
    item("Quinoa Bowl with Roasted Vegetables", "", SERVING, [450.0, 62.0, 15.0, 9.0, 14.0, 420.0]),
];
const DINNERS: &[Food] = &[
    item("Grilled Salmon with Rice", "", SERVING, [610.0, 52.0, 22.0, 2.0, 45.0, 480.0]),
    item("Spaghetti Bolognese", "", SERVING, [680.0, 78.0, 22.0, 6.0, 38.0, 890.0]),
    item("Chicken Stir Fry", "", SERVING, [520.0, 40.0, 18.0, 5.0, 44.0, 1120.0]),
    item("Beef Tacos", "", SERVING, [640.0, 48.0, 32.0, 6.0, 36.0, 980.0]),
    item("Vegetable Curry with Naan", "", SERVING, [710.0, 92.0, 28.0, 11.0, 17.0, 1240.0]),
];
const SNACKS: &[Food] = &[
    item("Apple", "", SERVING, [95.0, 25.0, 0.3, 4.4, 0.5, 2.0]),
    item("Almonds", "", OZ, [164.0, 6.1, 14.2, 3.5, 6.0, 0.0]),
    item("Protein Bar", "Quest", SERVING, [200.0, 21.0, 8.0, 14.0, 21.0, 230.0]),
    item("Dark Chocolate", "Lindt", OZ, [170.0, 13.0, 12.0, 3.1, 2.2, 6.0]),
    item("Flat White", "", SERVING, [110.0, 9.0, 6.0, 0.0, 6.0, 95.0]),
];

pub(crate) fn food(day: Day, rng: &mut Rng) -> Value {
    // Fitbit meal types: 1 breakfast, 2 morning snack, 3 lunch, 4 afternoon snack, 5 dinner.
    let mut meals: Vec<(u32, &Food)> = vec![(1, rng.pick(BREAKFASTS)), (3, rng.pick(LUNCHES))];
    if rng.chance(0.5) {
        meals.push((2, rng.pick(SNACKS)));
    }
    if rng.chance(0.6) {
        meals.push((4, rng.pick(SNACKS)));
    }
    meals.push((5, rng.pick(DINNERS)));
    if is_weekend(day) && rng.chance(0.4) {
        meals.push((4, rng.pick(SNACKS)));
    }
    meals.sort_by_key(|(meal, _)| *meal);

    let mut totals = [0f64; 6];
    let mut foods = Vec::with_capacity(meals.len());
    for (meal, food) in meals {
        let amount = *rng.pick(&[1.0, 1.0, 1.0, 1.5, 2.0]);
        let values = food.per_unit.map(|v| round(v * amount, 2));
        for (total, value) in totals.iter_mut().zip(values) {
            *total += value;
        }
        let food_id = 80_000 + (rng.next() % 900_000);
        foods.push(json!({
            "isFavorite": false,
            "logDate": day.to_string(),
            "logId": rng.log_id(),
            "loggedFood": {
                "accessLevel": "PUBLIC",
                "amount": amount,
                "brand": food.brand,
                "calories": values[0].round(),
                "foodId": food_id,
                "locale": "en_US",
                "mealTypeId": meal,
                "name": food.name,
                "unit": { "id": food.unit.0, "name": food.unit.1, "plural": food.unit.2 },
                "units": [food.unit.0, 226, 180, 147, 389],
            },
            "nutritionalValues": {
                "calories": values[0].round(),
                "carbs": values[1],
                "fat": values[2],
                "fiber": values[3],
                "protein": values[4],
                "sodium": values[5],
            },
        }));
    }
    json!({
        "foods": foods,
        "goals": { "calories": 2_300 },
        "summary": {
            "calories": totals[0].round(),
            "carbs": round(totals[1], 2),
            "fat": round(totals[2], 2),
            "fiber": round(totals[3], 2),
            "protein": round(totals[4], 2),
            "sodium": round(totals[5], 2),
            "water": rng.int(4, 12) * 250,
        },
    })
}

/// Height used for BMI, in metres.
const HEIGHT_M: f64 = 1.80;

pub(crate) fn vitals(day: Day, rng: &mut Rng) -> Value {
    // A slow downward trend with a seasonal wobble, plus daily noise.
    let t = (day.0 - first_day().0) as f64;
    let weight = round(84.0 - t * 0.004 + 1.1 * (t / 58.0).sin() + rng.noise(0.35), 2);
    let fat = round(22.5 - t * 0.002 + 0.6 * (t / 58.0).sin() + rng.noise(0.4), 2);
    let weigh_in = 6 * 60 + 30 + rng.int(0, 90);
    let mut readings = Vec::new();
    for _ in 0..rng.int(0, 2) {
        let at = *rng.pick(&[7 * 60, 8 * 60 + 30, 19 * 60, 21 * 60 + 15]) + rng.int(0, 29);
        readings.push((at, rng.int(112, 134), rng.int(70, 86), rng.int(56, 78)));
    }
    readings.sort_unstable();
    let readings: Vec<Value> = readings
        .into_iter()
        .map(|(at, systolic, diastolic, pulse)| {
            json!({
                "systolic": systolic,
                "diastolic": diastolic,
                "pulse": pulse,
                "time": timestamp(day, at),
                "logId": rng.log_id(),
            })
        })
        .collect();
    json!({
        "Weight": {
            "bmi": round(weight / (HEIGHT_M * HEIGHT_M), 2),
            "date": day.to_string(),
            "fat": fat,
            "logId": rng.log_id(),
            "source": "API",
            "time": format!("{:02}:{:02}:00", weigh_in / 60, weigh_in % 60),
            "weight": weight,
        },
        "BloodPressureReadings": readings,
        "Provider": "Withings",
    })
}
