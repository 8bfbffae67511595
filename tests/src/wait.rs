//! Polling for eventual conditions of a real cluster.

use std::time::{Duration, Instant};

/// Polls `probe` every 250 ms until it returns `Some`, and panics naming `what` (and the last
/// observation) after `timeout`.
pub fn until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}
