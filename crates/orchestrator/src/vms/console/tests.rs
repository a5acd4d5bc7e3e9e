use super::*;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

fn appender(path: &Path) -> std::fs::File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// Receives until `want` bytes came, or two seconds pass without any.
async fn receive(rx: &mut mpsc::Receiver<Result<Bytes, Infallible>>, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
            Ok(Some(Ok(b))) => got.extend_from_slice(&b),
            _ => break,
        }
    }
    got
}

#[tokio::test]
async fn plain_logs_print_the_previous_file_then_the_current_one_and_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.log");
    std::fs::write(dir.path().join("console.log.1"), "boot 1\n").unwrap();
    std::fs::write(&path, "boot 2\n").unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    let streaming = tokio::spawn(stream_console(ConsoleLog::new(&path), false, tx));
    let mut got = Vec::new();
    while let Some(Ok(b)) = rx.recv().await {
        got.extend_from_slice(&b);
    }
    assert_eq!(got, b"boot 1\nboot 2\n");
    streaming.await.unwrap();
}

#[tokio::test]
async fn follow_goes_on_across_rotations_without_losing_or_repeating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.log");
    let log = ConsoleLog::new(&path);
    let mut guest = appender(&path);
    guest.write_all(b"[boot] 1\n").unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    let streaming = tokio::spawn(stream_console(log.clone(), true, tx));
    let mut expected = b"[boot] 1\n".to_vec();
    let mut got = receive(&mut rx, expected.len()).await;
    assert_eq!(got, expected);

    for round in 0..6 {
        // Written in pieces around a rotation, with the follower at every
        // point of its poll: before, between and after.
        let before = format!("round {round}: before the rotation\n");
        guest.write_all(before.as_bytes()).unwrap();
        tokio::time::sleep(Duration::from_millis(37 * round)).await;
        let half = format!("round {round}: half a li");
        guest.write_all(half.as_bytes()).unwrap();
        assert!(matches!(
            // Over the cap, whose last 50 bytes hold this round's pieces
            // but not all that came before them.
            log.rotate_if_over(50).unwrap(),
            Rotation::Rotated(_)
        ));
        let after = "ne, finished after it\n".to_string();
        guest.write_all(after.as_bytes()).unwrap();
        for part in [before, half, after] {
            expected.extend_from_slice(part.as_bytes());
        }
        got.extend(receive(&mut rx, expected.len() - got.len()).await);
        if got != expected {
            break;
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected)
    );
    // Rotated: the current file holds only the last piece.
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"ne, finished after it\n".to_vec()
    );
    drop(rx);
    tokio::time::timeout(Duration::from_secs(2), streaming)
        .await
        .expect("the stream ends when its client goes away")
        .unwrap();
}

#[tokio::test]
async fn follow_waits_for_a_log_that_does_not_exist_yet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.log");
    let (tx, mut rx) = mpsc::channel(8);
    let streaming = tokio::spawn(stream_console(ConsoleLog::new(&path), true, tx));
    tokio::time::sleep(Duration::from_millis(300)).await;
    appender(&path).write_all(b"late\n").unwrap();
    assert_eq!(receive(&mut rx, 5).await, b"late\n");
    drop(rx);
    streaming.await.unwrap();
}

#[test]
fn a_failing_rotation_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the log should be: it cannot be opened for writing.
    let path = dir.path().join("console.log");
    std::fs::create_dir(&path).unwrap();
    let logs = vec![("x".to_string(), ConsoleLog::new(&path))];
    let failing = rotate_all(logs.clone(), 1, HashSet::new());
    assert!(failing.contains("x"));
    assert!(rotate_all(logs, 1, failing).contains("x"));
}
