//! Measured figures as the JSON reports of `bench` and `load` carry them.

/// `value` rounded to `decimals` places, as a JSON number.
pub fn figure(value: f64, decimals: i32) -> serde_json::Value {
    let scale = 10f64.powi(decimals);
    serde_json::json!((value * scale).round() / scale)
}
