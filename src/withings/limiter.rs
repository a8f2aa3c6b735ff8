//! The application-wide request budget: at most R requests in any 60-second window, shared by
//! every user and task of a process, plus a pause that everyone honours after a 601.
//!
//! Withings counts requests per application in a sliding 60 s window (rejected ones too), so
//! the limiter mirrors that window instead of a token bucket: a slot is taken when a request
//! starts and stamped again when its answer arrives. The server saw the request somewhere
//! between the two, so waiting 60 s from the later stamp can never overrun its window.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(60);

/// Who goes first when the window is full: a waiting request of a higher priority always
/// takes the next free slot before any of a lower one (live work, then polling, then
/// backfill). Within one priority, requests go as the window frees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Someone is waiting: a refresh asked for, a notification, a link.
    Live = 0,
    /// Keeping users fresh (an incremental sync).
    #[default]
    Poll = 1,
    /// History (a backfill): uses what the others leave.
    Backfill = 2,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Live => "live",
            Priority::Poll => "poll",
            Priority::Backfill => "backfill",
        }
    }
}

#[derive(Debug)]
struct State {
    /// (slot id, instant) of the requests inside the window.
    slots: VecDeque<(u64, Instant)>,
    next_id: u64,
    /// No request starts before this (set by a 601).
    paused_until: Option<Instant>,
    /// Requests waiting for a slot, per priority.
    waiting: [usize; 3],
}

#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    state: Mutex<State>,
    /// Woken when a waiter leaves (it took a slot or gave up), so lower priorities look again.
    changed: Notify,
}

/// A taken slot: hand it back with [`RateLimiter::finish`] when the answer arrives.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    id: u64,
}

/// A registered waiter; leaving (a slot taken, or the request dropped) lets the others look.
struct Waiting<'a> {
    limiter: &'a RateLimiter,
    priority: Priority,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.limiter.lock().waiting[self.priority as usize] -= 1;
        self.limiter.changed.notify_waiters();
    }
}

impl RateLimiter {
    /// `per_minute` = 0 means unlimited (a private simulator).
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            state: Mutex::new(State { slots: VecDeque::new(), next_id: 0, paused_until: None, waiting: [0; 3] }),
            changed: Notify::new(),
        }
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is consistent after every statement: a panic elsewhere cannot break it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a slot, behind every waiting request of a higher priority; returns the slot
    /// and how long the wait was.
    pub async fn acquire(&self, priority: Priority) -> (Slot, Duration) {
        let started = Instant::now();
        self.lock().waiting[priority as usize] += 1;
        let _waiting = Waiting { limiter: self, priority };
        loop {
            // Registered before the state is read, so a leave in between is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait_until = {
                let mut s = self.lock();
                let now = Instant::now();
                match s.paused_until {
                    Some(p) if p > now => Some(p),
                    _ => {
                        while s.slots.front().is_some_and(|(_, t)| now.duration_since(*t) >= WINDOW) {
                            s.slots.pop_front();
                        }
                        let ahead = s.waiting[..priority as usize].iter().any(|n| *n > 0);
                        let free = self.per_minute == 0 || s.slots.len() < self.per_minute as usize;
                        if free && !ahead {
                            let id = s.next_id;
                            s.next_id += 1;
                            if self.per_minute > 0 {
                                s.slots.push_back((id, now));
                            }
                            return (Slot { id }, started.elapsed());
                        }
                        match free {
                            // Free, but a higher priority is waiting: it takes it, then we look again.
                            true => None,
                            // The oldest slot leaves the window at its stamp + 60 s.
                            false => Some(s.slots.iter().map(|(_, t)| *t).min().expect("window is full") + WINDOW),
                        }
                    }
                }
            };
            match wait_until {
                Some(t) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(t + Duration::from_millis(5)) => {}
                        _ = &mut changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// Stamps the slot with the time the answer arrived.
    pub async fn finish(&self, slot: Slot) {
        if self.per_minute == 0 {
            return;
        }
        let mut s = self.lock();
        let now = Instant::now();
        if let Some(entry) = s.slots.iter_mut().find(|(id, _)| *id == slot.id) {
            entry.1 = now;
        }
        // Keep the deque ordered by stamp so the front is always the oldest.
        s.slots.make_contiguous().sort_by_key(|(_, t)| *t);
    }

    /// After a 601: nobody starts a request for `pause`.
    pub async fn pause(&self, pause: Duration) {
        let mut s = self.lock();
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
            let (slot, _) = limiter.acquire(Priority::Poll).await;
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
        let (_, waited) = limiter.acquire(Priority::Poll).await;
        assert!(Instant::now() - t0 >= Duration::from_secs(30));
        assert!(waited >= Duration::from_secs(30));
    }

    /// With the window full, a live request queued after two backfill requests still takes
    /// the next free slot; the backfill ones follow in the slots after it.
    #[tokio::test(start_paused = true)]
    async fn a_higher_priority_takes_the_next_free_slot() {
        let limiter = std::sync::Arc::new(RateLimiter::new(1));
        let (slot, _) = limiter.acquire(Priority::Poll).await;
        limiter.finish(slot).await;
        let t0 = Instant::now();
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, p) in [Priority::Backfill, Priority::Backfill, Priority::Live].into_iter().enumerate() {
            let (limiter, order) = (limiter.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let (slot, _) = limiter.acquire(p).await;
                order.lock().unwrap().push((p, Instant::now() - t0));
                limiter.finish(slot).await;
            }));
            // Queued in this order, each before the window frees.
            tokio::time::advance(Duration::from_millis(10 * (i as u64 + 1))).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [Priority::Live, Priority::Backfill, Priority::Backfill]);
        assert!(order[0].1 >= WINDOW - Duration::from_millis(100), "the live request waited for the window: {order:?}");
        assert!(order[1].1 >= order[0].1 + WINDOW - Duration::from_millis(100), "one request per minute: {order:?}");
    }

    /// A waiter that gives up (its request is dropped) does not hold back lower priorities.
    #[tokio::test(start_paused = true)]
    async fn a_dropped_waiter_does_not_block_the_others() {
        let limiter = std::sync::Arc::new(RateLimiter::new(1));
        let (slot, _) = limiter.acquire(Priority::Poll).await;
        limiter.finish(slot).await;
        let live = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.acquire(Priority::Live).await })
        };
        tokio::time::advance(Duration::from_millis(10)).await;
        live.abort();
        let _ = live.await;
        let t0 = Instant::now();
        let (_, _) = limiter.acquire(Priority::Backfill).await;
        assert!(Instant::now() - t0 <= WINDOW, "the backfill request went when the window freed");
        assert_eq!(limiter.lock().waiting, [0, 0, 0]);
    }
}
