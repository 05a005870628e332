//! What keeps the mirror polite: a bandwidth limit shared by every upload, and a reconnect
//! gate so a failing server is not hammered by all workers at once.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bytes read from local files for uploads, and the optional limit on their rate.
#[derive(Default)]
pub struct Meter {
    sent: AtomicU64,
    bucket: Option<TokenBucket>,
}

impl Meter {
    pub fn new(bytes_per_sec: Option<u64>) -> Meter {
        Meter {
            sent: AtomicU64::new(0),
            bucket: bytes_per_sec.map(TokenBucket::new),
        }
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// The most to read at once: small enough under a limit that uploads stay smooth.
    pub fn max_read(&self) -> usize {
        self.bucket
            .as_ref()
            .map_or(usize::MAX, |b| (b.rate / 8.0).max(16384.0) as usize)
    }

    /// Counts `n` bytes read; under a limit, waits until they may be sent.
    pub fn account(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(b) = &self.bucket {
            b.take(n as f64);
        }
    }
}

/// A token bucket: `rate` bytes per second, bursts of an eighth of a second. Callers that
/// overdraw it wait for their debt, so concurrent uploads share the rate between them.
struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    fn new(bytes_per_sec: u64) -> TokenBucket {
        let rate = bytes_per_sec.max(1) as f64;
        TokenBucket {
            rate,
            burst: rate / 8.0,
            state: Mutex::new((rate / 8.0, Instant::now())),
        }
    }

    fn take(&self, n: f64) {
        let wait = {
            let mut s = self.state.lock();
            let now = Instant::now();
            s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.burst);
            s.1 = now;
            s.0 -= n;
            if s.0 < 0.0 {
                Duration::from_secs_f64(-s.0 / self.rate)
            } else {
                Duration::ZERO
            }
        };
        std::thread::sleep(wait);
    }
}

/// Spaces connection attempts after failures, for all threads together: each failure in a
/// row doubles the wait (from half a second to a minute); a success opens the gate.
#[derive(Default)]
pub struct ReconnectGate {
    state: Mutex<(u32, Option<Instant>)>,
}

const GATE_CAP: Duration = Duration::from_secs(60);

impl ReconnectGate {
    /// When the next attempt may start (None: now).
    pub fn opens_at(&self) -> Option<Instant> {
        self.state.lock().1.filter(|t| *t > Instant::now())
    }

    pub fn failed(&self) {
        let mut s = self.state.lock();
        s.0 = s.0.saturating_add(1);
        let wait = Duration::from_millis(500)
            .saturating_mul(1 << (s.0 - 1).min(16))
            .min(GATE_CAP);
        s.1 = Some(Instant::now() + wait);
    }

    /// After a success, or when a user asks for a retry now (flush): the next attempt may
    /// start at once; the wait grows again from the start if it fails.
    pub fn reset(&self) {
        *self.state.lock() = (0, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_holds_the_rate_across_threads() {
        let m = std::sync::Arc::new(Meter::new(Some(4 << 20)));
        let start = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..8 {
                        m.account(64 << 10);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // 2 MiB at 4 MiB/s, less the initial burst of 0.5 MiB: 0.375 s.
        let took = start.elapsed().as_secs_f64();
        assert!((0.33..0.6).contains(&took), "{took}");
        assert_eq!(m.sent(), 2 << 20);
        assert_eq!(m.max_read(), 512 << 10);
        assert_eq!(Meter::new(None).max_read(), usize::MAX);
    }

    #[test]
    fn gate_backs_off_and_reopens() {
        let g = ReconnectGate::default();
        assert!(g.opens_at().is_none());
        g.failed();
        let first = g.opens_at().unwrap() - Instant::now();
        g.failed();
        g.failed();
        let third = g.opens_at().unwrap() - Instant::now();
        assert!(first <= Duration::from_millis(500) && third > Duration::from_millis(1900));
        for _ in 0..40 {
            g.failed();
        }
        assert!(g.opens_at().unwrap() - Instant::now() <= GATE_CAP);
        g.reset();
        assert!(g.opens_at().is_none());
    }
}
