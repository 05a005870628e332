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
/// row doubles the wait (from half a second to a minute). When the wait is over, one thread
/// probes while the others hold back (one login, one OTP prompt); a success opens the gate.
#[derive(Default)]
pub struct ReconnectGate {
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    failures: u32,
    opens_at: Option<Instant>,
    probing: bool,
}

const GATE_CAP: Duration = Duration::from_secs(60);
/// How often a thread held back looks again.
const GATE_POLL: Duration = Duration::from_millis(100);

impl ReconnectGate {
    /// None: this thread may connect now. Some(t): look again at `t`.
    pub fn enter(&self) -> Option<Instant> {
        let mut s = self.state.lock();
        let now = Instant::now();
        if s.failures == 0 {
            return None;
        }
        match s.opens_at {
            Some(t) if t > now => Some(t.min(now + GATE_POLL)),
            _ if s.probing => Some(now + GATE_POLL),
            _ => {
                s.probing = true;
                None
            }
        }
    }

    pub fn failed(&self) {
        let mut s = self.state.lock();
        s.failures = s.failures.saturating_add(1);
        let wait = Duration::from_millis(500)
            .saturating_mul(1 << (s.failures - 1).min(16))
            .min(GATE_CAP);
        s.opens_at = Some(Instant::now() + wait);
        s.probing = false;
    }

    /// After a success, or when a user asks for a retry now (flush): the next attempt may
    /// start at once; the wait grows again from the start if it fails.
    pub fn reset(&self) {
        *self.state.lock() = GateState::default();
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
    fn gate_backs_off_lets_one_probe_and_reopens() {
        let g = ReconnectGate::default();
        assert!(
            g.enter().is_none() && g.enter().is_none(),
            "open: everyone goes"
        );
        g.failed();
        let first = g.enter().expect("closed after a failure") - Instant::now();
        assert!(first <= GATE_POLL);
        g.failed();
        g.failed();
        assert!(g.state.lock().opens_at.unwrap() - Instant::now() > Duration::from_millis(1900));
        g.state.lock().opens_at = Some(Instant::now());
        assert!(g.enter().is_none(), "the wait is over: one probe");
        assert!(g.enter().is_some(), "the others wait for the probe");
        g.failed();
        assert!(g.enter().is_some());
        for _ in 0..40 {
            g.failed();
        }
        assert!(g.state.lock().opens_at.unwrap() - Instant::now() <= GATE_CAP);
        g.reset();
        assert!(g.enter().is_none() && g.enter().is_none());
    }
}
