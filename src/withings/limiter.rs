//! The application-wide request budget: at most R requests in any 60-second window, shared by
//! every user and task of a process, plus a pause that everyone honours after a 601.
//!
//! Withings counts requests per application in a sliding 60 s window (rejected ones too), so
//! the limiter mirrors that window instead of a token bucket: a slot is taken when a request
//! starts and stamped again when its answer arrives. The server saw the request somewhere
//! between the two, so waiting 60 s from the later stamp can never overrun its window.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct State {
    /// (slot id, instant) of the requests inside the window.
    slots: VecDeque<(u64, Instant)>,
    next_id: u64,
    /// No request starts before this (set by a 601).
    paused_until: Option<Instant>,
}

#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    state: Mutex<State>,
}

/// A taken slot: hand it back with [`RateLimiter::finish`] when the answer arrives.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    id: u64,
}

impl RateLimiter {
    /// `per_minute` = 0 means unlimited (a private simulator).
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter { per_minute, state: Mutex::new(State { slots: VecDeque::new(), next_id: 0, paused_until: None }) }
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Waits for a slot; returns it and how long the wait was.
    pub async fn acquire(&self) -> (Slot, Duration) {
        let started = Instant::now();
        loop {
            let wait_until = {
                let mut s = self.state.lock().await;
                let now = Instant::now();
                match s.paused_until {
                    Some(p) if p > now => Some(p),
                    _ => {
                        while s.slots.front().is_some_and(|(_, t)| now.duration_since(*t) >= WINDOW) {
                            s.slots.pop_front();
                        }
                        if self.per_minute == 0 || s.slots.len() < self.per_minute as usize {
                            let id = s.next_id;
                            s.next_id += 1;
                            if self.per_minute > 0 {
                                s.slots.push_back((id, now));
                            }
                            return (Slot { id }, started.elapsed());
                        }
                        // The oldest slot leaves the window at its stamp + 60 s.
                        let oldest = s.slots.iter().map(|(_, t)| *t).min().expect("window is full");
                        Some(oldest + WINDOW)
                    }
                }
            };
            if let Some(t) = wait_until {
                tokio::time::sleep_until(t + Duration::from_millis(5)).await;
            }
        }
    }

    /// Stamps the slot with the time the answer arrived.
    pub async fn finish(&self, slot: Slot) {
        if self.per_minute == 0 {
            return;
        }
        let mut s = self.state.lock().await;
        let now = Instant::now();
        if let Some(entry) = s.slots.iter_mut().find(|(id, _)| *id == slot.id) {
            entry.1 = now;
        }
        // Keep the deque ordered by stamp so the front is always the oldest.
        s.slots.make_contiguous().sort_by_key(|(_, t)| *t);
    }

    /// After a 601: nobody starts a request for `pause`.
    pub async fn pause(&self, pause: Duration) {
        let mut s = self.state.lock().await;
        let until = Instant::now() + pause;
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn at_most_r_requests_start_in_any_60_seconds() {
        let limiter = RateLimiter::new(3);
        let t0 = Instant::now();
        let mut starts = Vec::new();
        for _ in 0..7 {
            let (slot, _) = limiter.acquire().await;
            starts.push(Instant::now() - t0);
            tokio::time::advance(Duration::from_millis(100)).await; // the request's round trip
            limiter.finish(slot).await;
        }
        for (i, s) in starts.iter().enumerate().skip(3) {
            assert!(*s >= starts[i - 3] + WINDOW, "request {i} started {s:?}, within 60 s of {:?}", starts[i - 3]);
        }
        assert!(starts[2] < Duration::from_secs(1), "the first three go at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_everyone() {
        let limiter = RateLimiter::new(0);
        limiter.pause(Duration::from_secs(30)).await;
        let t0 = Instant::now();
        let (_, waited) = limiter.acquire().await;
        assert!(Instant::now() - t0 >= Duration::from_secs(30));
        assert!(waited >= Duration::from_secs(30));
    }
}
