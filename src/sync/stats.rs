//! What `status` says about throughput, kept small: the upload rate over a sliding window
//! (samples of the byte counter, at most one a second) and what was confirmed in the last hour
//! (ten-second slots). Memory stays bounded whatever the traffic; the figures are computed
//! when asked for.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

/// The window the upload rate is averaged over.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Samples of the byte counter are taken at most this often.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Confirmations are counted in slots this long, for an hour.
const SLOT: Duration = Duration::from_secs(10);
const HOUR: Duration = Duration::from_secs(3600);
const SLOTS: u64 = HOUR.as_secs() / SLOT.as_secs();

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub files: u64,
    pub bytes: u64,
}

pub struct Stats {
    origin: Instant,
    /// (when, bytes sent so far), oldest first; the first one at or before the window's start.
    samples: VecDeque<(Instant, u64)>,
    /// (slot number since `origin`, what was confirmed in it), oldest first, the last hour.
    confirmed: VecDeque<(u64, Tally)>,
    last_confirmed: Option<SystemTime>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats::new(Instant::now())
    }
}

impl Stats {
    pub fn new(origin: Instant) -> Stats {
        Stats {
            origin,
            samples: VecDeque::new(),
            confirmed: VecDeque::new(),
            last_confirmed: None,
        }
    }

    /// Notes the byte counter's value; cheap enough to call on every planner turn.
    pub fn sample(&mut self, now: Instant, sent: u64) {
        if self
            .samples
            .back()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) < SAMPLE_EVERY)
        {
            return;
        }
        self.samples.push_back((now, sent));
        // Keep one sample at or before the window's start, so the rate spans the whole window.
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over about the last `RATE_WINDOW`, given the counter's value now.
    pub fn rate(&self, now: Instant, sent: u64) -> f64 {
        let base = self
            .samples
            .iter()
            .rev()
            .find(|(t, _)| now.saturating_duration_since(*t) >= RATE_WINDOW)
            .or(self.samples.front());
        let Some(&(t, then)) = base else {
            return 0.0;
        };
        let span = now.saturating_duration_since(t).as_secs_f64();
        if span < 0.5 {
            return 0.0;
        }
        sent.saturating_sub(then) as f64 / span
    }

    fn slot(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs() / SLOT.as_secs()
    }

    /// A file of `bytes` bytes was confirmed on the remote.
    pub fn confirmed(&mut self, now: Instant, wall: SystemTime, bytes: u64) {
        let slot = self.slot(now);
        match self.confirmed.back_mut() {
            Some((s, t)) if *s == slot => {
                t.files += 1;
                t.bytes += bytes;
            }
            _ => self.confirmed.push_back((slot, Tally { files: 1, bytes })),
        }
        while self
            .confirmed
            .front()
            .is_some_and(|(s, _)| s + SLOTS <= slot)
        {
            self.confirmed.pop_front();
        }
        self.last_confirmed = Some(wall);
    }

    /// What was confirmed in the last hour (to within one slot).
    pub fn last_hour(&self, now: Instant) -> Tally {
        let slot = self.slot(now);
        self.confirmed
            .iter()
            .filter(|(s, _)| s + SLOTS > slot)
            .fold(Tally::default(), |a, (_, t)| Tally {
                files: a.files + t.files,
                bytes: a.bytes + t.bytes,
            })
    }

    pub fn last_confirmed(&self) -> Option<SystemTime> {
        self.last_confirmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn rate_averages_the_last_window_and_memory_stays_bounded() {
        let t0 = Instant::now();
        let mut s = Stats::new(t0);
        assert_eq!(s.rate(t0, 0), 0.0, "no sample yet");
        // Idle for a minute, sampled every 100 ms (most samples are skipped).
        for i in 0..600 {
            s.sample(t0 + secs(i as f64 / 10.0), 0);
        }
        assert!(s.samples.len() <= RATE_WINDOW.as_secs() as usize + 2);
        // Then 1 MiB a second for 20 s.
        let mut s = Stats::new(t0);
        for i in 0..=200u64 {
            s.sample(t0 + secs(i as f64 / 10.0), (i << 20) / 10);
        }
        let now = t0 + secs(20.0);
        let r = s.rate(now, 20 << 20);
        assert!((r - f64::from(1 << 20)).abs() < 1e-6 * r, "{r}");
        assert!(s.samples.len() <= RATE_WINDOW.as_secs() as usize + 2);
        // Two seconds into an upload after idling: the window still holds the idle time.
        let mut s = Stats::new(t0);
        for i in 0..=30u64 {
            s.sample(t0 + secs(i as f64), 0);
        }
        let r = s.rate(t0 + secs(32.0), 2 << 20);
        assert!((r - f64::from(2 << 20) / 10.0).abs() < 1.0, "{r}");
        // Right after start: no span to speak of.
        let mut s = Stats::new(t0);
        s.sample(t0, 0);
        assert_eq!(s.rate(t0 + secs(0.1), 1000), 0.0);
        assert_eq!(s.rate(t0 + secs(1.0), 1000), 1000.0);
    }

    #[test]
    fn confirmations_count_for_an_hour() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut s = Stats::new(t0);
        assert_eq!(s.last_hour(t0), Tally::default());
        assert_eq!(s.last_confirmed(), None);
        s.confirmed(t0, wall, 100);
        s.confirmed(t0 + secs(1.0), wall, 50);
        s.confirmed(t0 + secs(1800.0), wall, 7);
        assert_eq!(
            s.last_hour(t0 + secs(1800.0)),
            Tally {
                files: 3,
                bytes: 157
            }
        );
        assert_eq!(s.last_hour(t0 + secs(3605.0)), Tally { files: 1, bytes: 7 });
        assert_eq!(s.last_hour(t0 + secs(5500.0)), Tally::default());
        // Many confirmations cost one slot each ten seconds, never more.
        for i in 0..100_000u64 {
            s.confirmed(t0 + secs(1800.0 + i as f64 / 10.0), wall, 1);
        }
        assert!(s.confirmed.len() as u64 <= SLOTS);
        assert_eq!(s.last_confirmed(), Some(wall));
    }
}
