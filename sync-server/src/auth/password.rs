//! Password hashing with argon2id (the `argon2` crate's defaults, OWASP's
//! minimum: 19 MiB, 2 passes). Hashing takes tens of milliseconds of CPU
//! and 19 MiB, so it runs on the blocking pool through a gate: as many at
//! once as there are cores, a short queue behind them, and [`Busy`] for the
//! rest, so a burst of sign-ins cannot spawn hundreds of blocking threads.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Hashings waiting per core beyond those running; more are refused.
const QUEUE_PER_CORE: usize = 4;

/// Too many hashings at once: answer 503 with Retry-After.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("too many sign-ins at once")]
    Busy,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

struct Gate {
    running: Semaphore,
    /// Hashings running or waiting.
    admitted: AtomicUsize,
    /// Most running or waiting at once.
    max_admitted: usize,
}

fn gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Gate {
            running: Semaphore::new(cores),
            admitted: AtomicUsize::new(0),
            max_admitted: cores + cores * QUEUE_PER_CORE,
        }
    })
}

/// Runs `work` on the blocking pool once the gate lets it through.
async fn gated<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, PasswordError> {
    let gate = gate();
    if gate.admitted.fetch_add(1, Ordering::AcqRel) >= gate.max_admitted {
        gate.admitted.fetch_sub(1, Ordering::AcqRel);
        metrics::counter!("larder_password_busy_total").increment(1);
        return Err(PasswordError::Busy);
    }
    let permit = gate.running.acquire().await;
    let result = tokio::task::spawn_blocking(work).await;
    drop(permit);
    gate.admitted.fetch_sub(1, Ordering::AcqRel);
    Ok(result.map_err(anyhow::Error::from)??)
}

/// Hashes `password` into a PHC string.
pub async fn hash(password: String) -> Result<String, PasswordError> {
    gated(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("cannot hash password: {e}"))
    })
    .await
}

/// Whether `password` matches `stored`. With no stored hash (unknown
/// account) a dummy hash is checked, so the answer takes as long either way
/// and does not reveal which accounts exist.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, PasswordError> {
    gated(move || {
        let is_known = stored.is_some();
        let stored = stored.unwrap_or_else(|| dummy_hash().to_owned());
        let parsed = PasswordHash::new(&stored)
            .map_err(|e| anyhow::anyhow!("stored password hash is invalid: {e}"))?;
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(is_known && matches)
    })
    .await
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(b"not a password anyone has", &salt)
            .map(|h| h.to_string())
            .expect("hashing a constant does not fail")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_password_matches_its_hash_only() {
        let stored = hash("correct horse battery".into()).await.expect("hash");
        assert!(stored.starts_with("$argon2id$"));
        assert!(
            verify("correct horse battery".into(), Some(stored.clone()))
                .await
                .unwrap()
        );
        assert!(
            !verify("wrong horse battery".into(), Some(stored))
                .await
                .unwrap()
        );
        assert!(!verify("anything".into(), None).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_past_the_queue_is_refused_and_the_rest_served() {
        let gate = gate();
        let at_once = gate.max_admitted;
        let burst: Vec<_> = (0..at_once * 3)
            .map(|_| tokio::spawn(verify("guess".into(), None)))
            .collect();
        let (mut served, mut busy) = (0, 0);
        for task in burst {
            match task.await.expect("task") {
                Ok(_) => served += 1,
                Err(PasswordError::Busy) => busy += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(served >= at_once, "{served} served");
        assert!(busy > 0, "a burst of {} is partly refused", at_once * 3);
        assert_eq!(gate.admitted.load(Ordering::Acquire), 0);
    }
}
