//! The forecasting example trains the GRU layer on a non-text task and beats the naive forecast.

#[path = "../examples/forecast.rs"]
mod forecast;

#[test]
fn the_forecast_example_learns_and_beats_repeating_the_last_value() {
    let result = forecast::run(300, 7, |_, _| {}).unwrap();
    let first = result.val_mse[0];
    let last = *result.val_mse.last().unwrap();
    assert!(
        last < first,
        "validation MSE did not fall: {:?}",
        result.val_mse
    );
    assert!(
        last < 0.8 * result.baseline_mse,
        "MSE {last} vs baseline {}",
        result.baseline_mse
    );
}
