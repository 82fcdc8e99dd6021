//! Watching mounted files for changes.
//!
//! The kubelet updates a mounted Secret or ConfigMap by writing a new timestamped directory and
//! atomically renaming a `..data` symlink over the old one; the visible `tls.crt` is itself a
//! symlink `tls.crt -> ..data/tls.crt`. Watching the file (its inode) misses that swap, so this
//! module polls the *contents* behind the paths, following symlinks afresh each time. Polling a
//! few small files every second costs nothing measurable and is immune to every way a file can be
//! replaced (symlink swap, rename over, in-place rewrite, ConfigMap subPath excepted).
//!
//! A change is acted upon only once two consecutive polls read the same bytes, so a file caught
//! half-written, or a certificate read before and its key after a swap, is not reported as an
//! error.

use std::path::PathBuf;
use std::time::Duration;

/// Polls `paths` every `interval` and calls `on_change` with their contents each time they settle
/// on new contents (compared with the contents last handed to `on_change`, initially `initial`).
/// Unreadable files are retried silently at the next poll (logged once per distinct error).
pub(crate) async fn poll_files<F>(
    paths: Vec<PathBuf>,
    interval: Duration,
    initial: Option<Vec<Vec<u8>>>,
    mut on_change: F,
) where
    F: FnMut(&[Vec<u8>]) + Send,
{
    let mut applied = initial;
    let mut candidate: Option<Vec<Vec<u8>>> = None;
    let mut last_error: Option<String> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let mut contents = Vec::with_capacity(paths.len());
        let mut failed = None;
        for p in &paths {
            match tokio::fs::read(p).await {
                Ok(bytes) => contents.push(bytes),
                Err(e) => {
                    failed = Some(format!("{}: {e}", p.display()));
                    break;
                }
            }
        }
        if let Some(err) = failed {
            if last_error.as_deref() != Some(&err) {
                tracing::warn!(error = %err, "cannot read a watched file; will retry");
                last_error = Some(err);
            }
            candidate = None;
            continue;
        }
        last_error = None;
        if applied.as_ref() == Some(&contents) {
            candidate = None;
            continue;
        }
        if candidate.as_ref() == Some(&contents) {
            on_change(&contents);
            applied = Some(contents);
            candidate = None;
        } else {
            candidate = Some(contents);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn reports_settled_changes_once() {
        let dir = std::env::temp_dir().join(format!("restrictor-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, b"one").unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let task = tokio::spawn(poll_files(
            vec![file.clone()],
            Duration::from_millis(20),
            Some(vec![b"one".to_vec()]),
            move |c| s.lock().unwrap().push(c[0].clone()),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(seen.lock().unwrap().is_empty());
        std::fs::write(&file, b"two").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*seen.lock().unwrap(), vec![b"two".to_vec()]);
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
