use super::*;
use std::io::Write;

/// Appends like a hypervisor: one `O_APPEND` descriptor kept open.
fn writer(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// Everything the cursor has now, in small reads.
fn drain(cursor: &mut Cursor) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        let n = cursor.read(&mut buf).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn within_the_cap_nothing_moves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.log");
    let log = ConsoleLog::new(&path);
    assert_eq!(
        log.rotate_if_over(10).unwrap(),
        Rotation::Kept,
        "no file yet"
    );
    writer(&path).write_all(b"0123456789").unwrap();
    assert_eq!(log.rotate_if_over(10).unwrap(), Rotation::Kept);
    assert!(!log.previous_path().exists());
    assert_eq!(log.previous_path(), dir.path().join("console.log.1"));
}

#[test]
fn rotation_keeps_one_previous_file_and_writers_go_on_at_the_new_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.log");
    let log = ConsoleLog::new(&path);
    let mut w = writer(&path);
    w.write_all(b"first boot\n").unwrap();
    assert_eq!(log.rotate_if_over(10).unwrap(), Rotation::Rotated(11));
    w.write_all(b"second\n").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"second\n", "no hole before it");
    assert_eq!(
        fs::read(log.previous_path()).unwrap(),
        b"irst boot\n",
        "the last 10 bytes"
    );
    w.write_all(b"third\n").unwrap();
    assert_eq!(log.rotate_if_over(12).unwrap(), Rotation::Rotated(13));
    assert_eq!(fs::read(log.previous_path()).unwrap(), b"econd\nthird\n");
    assert_eq!(fs::read(&path).unwrap(), b"");
    assert!(!dir.path().join("console.log.1.partial").exists());
}

#[test]
fn a_log_far_past_the_cap_keeps_only_the_cap() {
    // Left by a banger that did not rotate: one copy of the cap, not more.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.log");
    let big: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    fs::write(&path, &big).unwrap();
    let log = ConsoleLog::new(&path);
    let mut reader = log.cursor_at_start();
    assert_eq!(
        log.rotate_if_over(1000).unwrap(),
        Rotation::Rotated(big.len() as u64)
    );
    assert_eq!(
        fs::read(log.previous_path()).unwrap(),
        &big[big.len() - 1000..]
    );
    assert_eq!(drain(&mut reader), &big[big.len() - 1000..]);
    assert_eq!(reader.skipped(), big.len() as u64 - 1000);
}

#[test]
fn a_cursor_reads_across_a_rotation_without_losing_or_repeating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.log");
    let log = ConsoleLog::new(&path);
    let mut w = writer(&path);
    let mut from_start = log.cursor_at_start();
    w.write_all(b"abcdefgh").unwrap();
    let mut buf = [0u8; 3];
    assert_eq!(from_start.read(&mut buf).unwrap(), 3);
    assert_eq!(&buf, b"abc");
    // Rotated while the reader is in the middle: it finishes the previous
    // file, then starts the new one at its beginning.
    w.write_all(b"ij").unwrap();
    // The first byte (already read) is dropped, the rest kept.
    log.rotate_if_over(9).unwrap();
    w.write_all(b"KLM").unwrap();
    let mut rest = drain(&mut from_start);
    assert_eq!(rest, b"defghijKLM");
    // Caught up: nothing new until something is written.
    assert_eq!(from_start.read(&mut buf).unwrap(), 0);
    w.write_all(b"N").unwrap();
    rest = drain(&mut from_start);
    assert_eq!(rest, b"N");
    assert_eq!(from_start.skipped(), 0);
    assert_eq!(from_start.position(), log.end());

    // A new reader from the start sees the previous file, then this one.
    assert_eq!(drain(&mut log.cursor_at_start()), b"bcdefghijKLMN");
    // One at the end sees only what comes next.
    let mut at_end = log.cursor_at_end();
    assert!(drain(&mut at_end).is_empty());
    w.write_all(b"O").unwrap();
    assert_eq!(drain(&mut at_end), b"O");
}

#[test]
fn a_reader_two_rotations_behind_counts_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.log");
    let log = ConsoleLog::new(&path);
    let mut w = writer(&path);
    let mut slow = log.cursor_at_start();
    w.write_all(b"lost!").unwrap();
    log.rotate_if_over(4).unwrap();
    w.write_all(b"kept").unwrap();
    log.rotate_if_over(3).unwrap();
    w.write_all(b"new").unwrap();
    assert_eq!(drain(&mut slow), b"eptnew", "never garbage, never twice");
    assert_eq!(slow.skipped(), 6);
}

#[test]
fn a_boot_offset_is_found_again_after_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.log");
    let mut w = writer(&path);
    w.write_all(b"last boot\n").unwrap();
    fs::write(dir.path().join("console.log.1"), b"older\n").unwrap();
    // The daemon restarted: counting starts at what is on disk.
    let log = ConsoleLog::new(&path);
    let mut boot = log.cursor_at(10);
    w.write_all(b"this boot: ready\n").unwrap();
    log.rotate_if_over(26).unwrap();
    w.write_all(b"after\n").unwrap();
    assert_eq!(drain(&mut boot), b"this boot: ready\nafter\n");
    assert_eq!(
        drain(&mut log.cursor_at_start()),
        b"ast boot\nthis boot: ready\nafter\n",
        "one previous file, of the cap's last bytes, only"
    );
}

#[test]
fn a_log_truncated_by_someone_else_is_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.log");
    let log = ConsoleLog::new(&path);
    fs::write(&path, b"0123456789").unwrap();
    let mut c = log.cursor_at_end();
    fs::write(&path, b"new").unwrap();
    assert_eq!(drain(&mut c), b"new");
}

#[test]
fn a_follower_keeps_up_with_a_writer_and_the_rotation_at_once() {
    // The writer, the rotation and the reader each in their own thread,
    // as in the daemon. Bytes written in the instant between the copy and
    // the truncation may be lost (the cost of copytruncate); nothing may
    // be read twice or out of order, and the reader skips nothing.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.log");
    let log = ConsoleLog::new(&path);
    let mut reader = log.cursor_at_start();
    const LINES: u32 = 40_000;
    let write_path = path.clone();
    let writing = std::thread::spawn(move || {
        let mut w = writer(&write_path);
        for i in 0..LINES {
            w.write_all(format!("line {i:06}\n").as_bytes()).unwrap();
            // About what a flooded serial port writes: 600 KB/s.
            if i % 50 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    });
    let rotator = log.clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let rotating = std::thread::spawn(move || {
        let mut rotations = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Rotation::Rotated(_) = rotator.rotate_if_over(64 * 1024).unwrap() {
                rotations += 1;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        rotations
    });
    // The reader keeps well within the cap of the end (64K: a tenth of a
    // second of this writer), so nothing is rotated away before it reads.
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let finished = writing.is_finished();
        if finished {
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let n = reader.read(&mut buf).unwrap();
        seen.extend_from_slice(&buf[..n]);
        if n == 0 {
            if finished && rotating.is_finished() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    let rotations = rotating.join().unwrap();
    assert!(rotations >= 2, "rotated {rotations} times");
    assert_eq!(reader.skipped(), 0);
    let text = String::from_utf8(seen).unwrap();
    let mut last: Option<u32> = None;
    let mut count = 0;
    for line in text.lines() {
        // A line cut by a lost instant is the only thing that may not parse.
        let Some(n) = line
            .strip_prefix("line ")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        assert!(last.is_none_or(|l| n > l), "{n} after {last:?}");
        last = Some(n);
        count += 1;
    }
    // What the rotation lost is not the reader's doing, and depends on
    // how long this busy host preempts the rotating thread; but it is
    // rare at a serial port's pace.
    assert!(count > LINES * 3 / 4, "read {count} of {LINES} lines");
}
