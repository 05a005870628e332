//! The queue of hash-on-close jobs: one entry per inode, due at a time, so that a burst of
//! closes and fsyncs of one file hashes it once.

use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    due: HashMap<u64, Instant>,
    running: usize,
    stopping: bool,
}

#[derive(Default)]
pub struct HashQueue {
    state: Mutex<State>,
    cv: Condvar,
}

impl HashQueue {
    /// Queues `ino` to be hashed at `at` (or earlier, if it is already queued sooner).
    /// Returns true when the inode was not queued before: the caller then pins it.
    pub fn schedule(&self, ino: u64, at: Instant) -> bool {
        let mut s = self.state.lock();
        let fresh = match s.due.get_mut(&ino) {
            Some(t) => {
                *t = (*t).min(at);
                false
            }
            None => {
                s.due.insert(ino, at);
                true
            }
        };
        self.cv.notify_all();
        fresh
    }

    /// Waits for the next due job; None once stopping and nothing is left.
    pub fn next(&self) -> Option<u64> {
        let mut s = self.state.lock();
        loop {
            let now = Instant::now();
            let soonest = s.due.iter().min_by_key(|(_, t)| **t).map(|(i, t)| (*i, *t));
            match soonest {
                Some((ino, t)) if t <= now || s.stopping => {
                    s.due.remove(&ino);
                    s.running += 1;
                    return Some(ino);
                }
                Some((_, t)) => {
                    self.cv.wait_for(&mut s, t - now);
                }
                None if s.stopping => return None,
                None => self.cv.wait(&mut s),
            }
        }
    }

    pub fn done(&self) {
        let mut s = self.state.lock();
        s.running -= 1;
        self.cv.notify_all();
    }

    /// Makes every queued job due now and waits until none is queued or running.
    pub fn settle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock();
        let now = Instant::now();
        for t in s.due.values_mut() {
            *t = now;
        }
        self.cv.notify_all();
        while !s.due.is_empty() || s.running > 0 {
            if self.cv.wait_until(&mut s, deadline).timed_out() {
                return false;
            }
        }
        true
    }

    /// Jobs still queued or running.
    pub fn len(&self) -> usize {
        let s = self.state.lock();
        s.due.len() + s.running
    }

    /// Lets the worker finish what is queued, without waiting for delays, then exit.
    pub fn stop(&self) {
        self.state.lock().stopping = true;
        self.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn one_entry_per_inode_and_earliest_time_wins() {
        let q = HashQueue::default();
        let later = Instant::now() + Duration::from_secs(60);
        assert!(q.schedule(7, later));
        assert!(!q.schedule(7, Instant::now()));
        assert_eq!(q.len(), 1);
        assert_eq!(q.next(), Some(7));
        q.done();
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn settle_expedites_delayed_jobs() {
        let q = Arc::new(HashQueue::default());
        q.schedule(1, Instant::now() + Duration::from_secs(3600));
        let w = {
            let q = q.clone();
            std::thread::spawn(move || {
                while let Some(_ino) = q.next() {
                    q.done();
                }
            })
        };
        assert!(q.settle(Duration::from_secs(10)));
        q.stop();
        w.join().unwrap();
    }

    #[test]
    fn settle_times_out_when_nothing_runs_the_jobs() {
        let q = HashQueue::default();
        q.schedule(1, Instant::now());
        assert!(!q.settle(Duration::from_millis(20)));
    }
}
