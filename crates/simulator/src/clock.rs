//! The simulated clock.
//!
//! Simulated time decides what data exists (a night's sleep appears after waking, today's
//! activity grows with each watch sync) and how long tokens and codes live. It starts at
//! `--now` (or the real time) and then either runs with real time or stays frozen
//! (`--freeze-clock`, for tests that compare bytes); `/_sim/clock` sets it or moves it forward.
//! Rate limits are not simulated time: they follow the real clock, as clients live in it.

use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct SimClock {
    inner: Mutex<ClockState>,
}

#[derive(Debug)]
struct ClockState {
    /// Simulated epoch seconds at `since`.
    base: i64,
    since: Instant,
    frozen: bool,
}

impl SimClock {
    pub fn new(start: i64, frozen: bool) -> SimClock {
        SimClock { inner: Mutex::new(ClockState { base: start, since: Instant::now(), frozen }) }
    }

    /// Current simulated time, epoch seconds.
    pub fn now(&self) -> i64 {
        let s = self.inner.lock().expect("clock lock");
        if s.frozen { s.base } else { s.base + s.since.elapsed().as_secs() as i64 }
    }

    pub fn frozen(&self) -> bool {
        self.inner.lock().expect("clock lock").frozen
    }

    /// Moves the clock to `to`. Time never goes backwards: data already served stays served.
    pub fn set(&self, to: i64) -> Result<(i64, i64), String> {
        let mut s = self.inner.lock().expect("clock lock");
        let now = if s.frozen { s.base } else { s.base + s.since.elapsed().as_secs() as i64 };
        if to < now {
            return Err(format!("the simulated clock cannot go back (now {now}, asked {to})"));
        }
        s.base = to;
        s.since = Instant::now();
        Ok((now, to))
    }
}
