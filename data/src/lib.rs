//! A deterministic generator of realistic flights rows, shared by the demo, the
//! benchmark and the tests. Row `i` is the same whatever batch it lands in, so any
//! range can be generated independently and streamed without holding the table.

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::{Arc, LazyLock};

/// Airports: IATA code and rough position (lat, lon in degrees) for distances.
const AIRPORTS: &[(&str, f64, f64)] = &[
    ("ATL", 33.64, -84.43),
    ("DFW", 32.90, -97.04),
    ("DEN", 39.86, -104.67),
    ("ORD", 41.98, -87.90),
    ("LAX", 33.94, -118.41),
    ("JFK", 40.64, -73.78),
    ("LAS", 36.08, -115.15),
    ("MCO", 28.43, -81.31),
    ("MIA", 25.80, -80.29),
    ("CLT", 35.21, -80.94),
    ("SEA", 47.45, -122.31),
    ("PHX", 33.43, -112.01),
    ("EWR", 40.69, -74.17),
    ("SFO", 37.62, -122.38),
    ("IAH", 29.98, -95.34),
    ("BOS", 42.36, -71.01),
    ("FLL", 26.07, -80.15),
    ("MSP", 44.88, -93.22),
    ("LGA", 40.78, -73.87),
    ("DTW", 42.21, -83.35),
    ("PHL", 39.87, -75.24),
    ("SLC", 40.79, -111.98),
    ("BWI", 39.18, -76.67),
    ("DCA", 38.85, -77.04),
    ("SAN", 32.73, -117.19),
    ("IAD", 38.95, -77.46),
    ("TPA", 27.98, -82.53),
    ("BNA", 36.12, -86.68),
    ("AUS", 30.19, -97.67),
    ("MDW", 41.79, -87.75),
    ("HNL", 21.32, -157.92),
    ("DAL", 32.85, -96.85),
    ("PDX", 45.59, -122.60),
    ("STL", 38.75, -90.37),
    ("RDU", 35.88, -78.79),
    ("HOU", 29.65, -95.28),
    ("SMF", 38.70, -121.59),
    ("MSY", 29.99, -90.26),
    ("SJC", 37.36, -121.93),
    ("SAT", 29.53, -98.47),
];

/// Carriers (IATA code) with their share of flights, most common first.
const CARRIERS: &[(&str, u32)] = &[
    ("WN", 20),
    ("AA", 17),
    ("DL", 16),
    ("UA", 13),
    ("B6", 6),
    ("AS", 5),
    ("NK", 5),
    ("F9", 4),
    ("G4", 3),
    ("HA", 2),
    ("SY", 1),
    ("MQ", 4),
    ("OO", 4),
];

/// First scheduled departure: 2024-01-01T00:00:00Z, in microseconds.
const EPOCH_2024_US: i64 = 1_704_067_200_000_000;
const MINUTE_US: i64 = 60_000_000;
/// Rows generated from one RNG seed; rows are reproducible per block.
const SEED_BLOCK_ROWS: u64 = 4096;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
    Arc::new(Schema::new(vec![
        Field::new("flight_id", DataType::Int64, false),
        Field::new("carrier", DataType::Utf8, false),
        Field::new("flight_number", DataType::Int32, false),
        Field::new("origin", DataType::Utf8, false),
        Field::new("destination", DataType::Utf8, false),
        Field::new("scheduled_departure", ts.clone(), false),
        Field::new("actual_departure", ts.clone(), true),
        Field::new("scheduled_arrival", ts.clone(), false),
        Field::new("actual_arrival", ts, true),
        Field::new("departure_delay_min", DataType::Int32, true),
        Field::new("arrival_delay_min", DataType::Int32, true),
        Field::new("distance_miles", DataType::Float64, false),
        Field::new("passengers", DataType::Int32, true),
        Field::new("cancelled", DataType::Boolean, false),
    ]))
});

/// The flights schema (documented in `data/README.md`).
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

fn great_circle_miles(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1, lat2, lon2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 3958.8 * h.sqrt().asin()
}

fn pick_carrier(rng: &mut StdRng) -> &'static str {
    let total: u32 = CARRIERS.iter().map(|c| c.1).sum();
    let mut roll = rng.random_range(0..total);
    for (code, weight) in CARRIERS {
        if roll < *weight {
            return code;
        }
        roll -= weight;
    }
    CARRIERS[0].0
}

/// Rows `start..start + rows` of the data set.
pub fn batch(start: u64, rows: usize) -> RecordBatch {
    let mut flight_id = Int64Builder::with_capacity(rows);
    let mut carrier = StringBuilder::with_capacity(rows, rows * 2);
    let mut flight_number = Int32Builder::with_capacity(rows);
    let mut origin = StringBuilder::with_capacity(rows, rows * 3);
    let mut destination = StringBuilder::with_capacity(rows, rows * 3);
    let mut sched_dep = TimestampMicrosecondBuilder::with_capacity(rows);
    let mut actual_dep = TimestampMicrosecondBuilder::with_capacity(rows);
    let mut sched_arr = TimestampMicrosecondBuilder::with_capacity(rows);
    let mut actual_arr = TimestampMicrosecondBuilder::with_capacity(rows);
    let mut dep_delay = Int32Builder::with_capacity(rows);
    let mut arr_delay = Int32Builder::with_capacity(rows);
    let mut distance = Float64Builder::with_capacity(rows);
    let mut passengers = Int32Builder::with_capacity(rows);
    let mut cancelled = BooleanBuilder::with_capacity(rows);

    let mut row = start;
    let end = start + rows as u64;
    while row < end {
        let block = row / SEED_BLOCK_ROWS;
        let mut rng = StdRng::seed_from_u64(0x6d61_6c6c_6172_6400 ^ block);
        // Skip to `row` inside its block so any range gives the same rows.
        for _ in block * SEED_BLOCK_ROWS..row {
            draw(&mut rng);
        }
        let block_end = ((block + 1) * SEED_BLOCK_ROWS).min(end);
        while row < block_end {
            let d = draw(&mut rng);
            let (o, dst) = (AIRPORTS[d.origin], AIRPORTS[d.destination]);
            let miles = great_circle_miles((o.1, o.2), (dst.1, dst.2));
            let block_minutes = (miles / 8.0) as i64 + 30;
            let departure = EPOCH_2024_US + row as i64 * MINUTE_US / 4;
            let arrival = departure + block_minutes * MINUTE_US;
            flight_id.append_value(row as i64);
            carrier.append_value(d.carrier);
            flight_number.append_value(d.flight_number);
            origin.append_value(o.0);
            destination.append_value(dst.0);
            sched_dep.append_value(departure);
            sched_arr.append_value(arrival);
            distance.append_value((miles * 10.0).round() / 10.0);
            cancelled.append_value(d.cancelled);
            if d.cancelled {
                actual_dep.append_null();
                actual_arr.append_null();
                dep_delay.append_null();
                arr_delay.append_null();
            } else {
                actual_dep.append_value(departure + d.dep_delay as i64 * MINUTE_US);
                dep_delay.append_value(d.dep_delay);
                if d.diverted {
                    actual_arr.append_null();
                    arr_delay.append_null();
                } else {
                    actual_arr.append_value(arrival + d.arr_delay as i64 * MINUTE_US);
                    arr_delay.append_value(d.arr_delay);
                }
            }
            passengers.append_option(d.passengers);
            row += 1;
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(flight_id.finish()),
        Arc::new(carrier.finish()),
        Arc::new(flight_number.finish()),
        Arc::new(origin.finish()),
        Arc::new(destination.finish()),
        Arc::new(sched_dep.finish()),
        Arc::new(actual_dep.finish()),
        Arc::new(sched_arr.finish()),
        Arc::new(actual_arr.finish()),
        Arc::new(dep_delay.finish()),
        Arc::new(arr_delay.finish()),
        Arc::new(distance.finish()),
        Arc::new(passengers.finish()),
        Arc::new(cancelled.finish()),
    ];
    RecordBatch::try_new(schema(), columns).expect("generated columns match the schema")
}

struct Draw {
    carrier: &'static str,
    flight_number: i32,
    origin: usize,
    destination: usize,
    cancelled: bool,
    diverted: bool,
    dep_delay: i32,
    arr_delay: i32,
    passengers: Option<i32>,
}

fn draw(rng: &mut StdRng) -> Draw {
    let carrier = pick_carrier(rng);
    let origin = rng.random_range(0..AIRPORTS.len());
    let destination = (origin + rng.random_range(1..AIRPORTS.len())) % AIRPORTS.len();
    let cancelled = rng.random_bool(0.018);
    let diverted = rng.random_bool(0.002);
    // Most flights leave within minutes of schedule; a long tail is very late.
    let base: f64 = rng.random_range(-12.0..18.0);
    let tail = if rng.random_bool(0.17) {
        rng.random_range(15.0..240.0)
    } else {
        0.0
    };
    let dep_delay = (base + tail) as i32;
    let arr_delay = dep_delay + rng.random_range(-15..12);
    let passengers = if rng.random_bool(0.01) {
        None
    } else {
        Some(rng.random_range(40..220))
    };
    Draw {
        carrier,
        flight_number: rng.random_range(1..=9999),
        origin,
        destination,
        cancelled,
        diverted,
        dep_delay,
        arr_delay,
        passengers,
    }
}
