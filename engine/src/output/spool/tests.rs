//! The spool: order, bounds, the batch in flight, damage at open and while running.

use super::*;

fn texts(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| String::from_utf8(r.bytes.to_vec()).unwrap()).collect()
}

#[test]
fn survives_reopen_in_order_and_removes_through() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.redb");
    {
        let s = Spool::open(&path, 1 << 20).unwrap().0;
        assert_eq!(s.append([b"a".as_slice(), b"b", b"c"]).unwrap().dropped.count, 0);
        assert_eq!(s.append([b"d".as_slice()]).unwrap().dropped.count, 0);
        let first = s.peek(2, 1 << 20).unwrap();
        assert_eq!(texts(&first), ["a", "b"]);
        s.remove_through(first[1].seq).unwrap();
        assert_eq!(s.len(), 2);
        s.sync().unwrap();
    }
    let s = Spool::open(&path, 1 << 20).unwrap().0;
    assert_eq!(s.len(), 2);
    assert_eq!(texts(&s.peek(10, 1 << 20).unwrap()), ["c", "d"]);
    s.append([b"e".as_slice()]).unwrap();
    assert_eq!(texts(&s.peek(10, 1 << 20).unwrap()), ["c", "d", "e"], "new alerts go after old ones");
    assert_eq!(s.count_stored().unwrap(), 3);
}

#[test]
fn full_spool_drops_the_oldest_and_says_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let s = Spool::open(&dir.path().join("w.redb"), 10 * (100 + RECORD_OVERHEAD)).unwrap().0;
    let rec = |i: usize| format!("{i:0100}").into_bytes();
    let mut dropped = 0;
    for i in 0..25 {
        dropped += s.append([rec(i).as_slice()]).unwrap().dropped.count;
    }
    assert_eq!(dropped, 15);
    assert_eq!(s.len(), 10);
    let left = s.peek(100, u64::MAX).unwrap();
    assert_eq!(left.first().unwrap().bytes, rec(15));
    assert_eq!(left.last().unwrap().bytes, rec(24));
}

/// The batch being delivered is never dropped (it may arrive: an alert
/// both delivered and reported dropped was over-counted), the ones after
/// it are; once removed, drops start from the oldest again.
#[test]
fn the_batch_in_flight_is_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Spool::open(&dir.path().join("s"), 10 * (100 + RECORD_OVERHEAD)).unwrap();
    let rec = |i: u8| vec![i; 100];
    for i in 0..10 {
        assert_eq!(s.append([rec(i).as_slice()]).unwrap().dropped.count, 0);
    }
    let batch = s.peek(3, u64::MAX).unwrap();
    assert_eq!(batch.len(), 3);
    let appended = s.append([rec(10).as_slice(), rec(11).as_slice()]).unwrap();
    assert_eq!(appended.first, batch[0].seq + 10, "sequence numbers run on");
    let gone = appended.dropped;
    assert_eq!((gone.count, gone.first, gone.last), (2, batch[0].seq + 3, batch[0].seq + 4), "which went, by number");
    assert!(gone.holds(batch[0].seq + 3) && !gone.holds(batch[2].seq) && !gone.holds(appended.first));
    let left: Vec<u8> = s.peek(100, u64::MAX).unwrap().iter().map(|r| r.bytes[0]).collect();
    assert_eq!(left, [0, 1, 2, 5, 6, 7, 8, 9, 10, 11], "3 and 4 went, not the batch in flight");
    // That peek put all ten in flight: the newest still arrives, over the bound.
    assert_eq!(s.append([rec(12).as_slice()]).unwrap().dropped.count, 0);
    s.remove_through(batch[2].seq).unwrap();
    assert_eq!(s.append([rec(13).as_slice(), rec(14).as_slice(), rec(15).as_slice()]).unwrap().dropped.count, 1);
    let left: Vec<u8> = s.peek(100, u64::MAX).unwrap().iter().map(|r| r.bytes[0]).collect();
    assert_eq!(left, [6, 7, 8, 9, 10, 11, 12, 13, 14, 15], "nothing in flight: the oldest go again");
}

/// redb can panic (or fail) on a damaged file long after it opened it:
/// the file is moved aside, a new one started, and the operation done
/// on it; the sink keeps working.
#[test]
fn damage_found_while_running_moves_the_file_aside_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.redb");
    let (s, _) = Spool::open(&path, 1 << 20).unwrap();
    s.append([b"old".as_slice()]).unwrap();
    s.panic_next.store(true, Ordering::Relaxed);
    assert_eq!(s.append([b"new".as_slice()]).unwrap().dropped.count, 0);
    assert_eq!(s.recoveries(), 1);
    assert_eq!(texts(&s.peek(10, 1 << 20).unwrap()), ["new"], "the new file has the new alert");
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file is kept aside: {aside:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    s.panic_next.store(true, Ordering::Relaxed);
    let batch = s.peek(10, 1 << 20).unwrap();
    assert!(batch.is_empty() && s.recoveries() == 2, "a panic in a read too");
    drop(s);
    let (again, recovered) = Spool::open(&path, 1 << 20).unwrap();
    assert!(!recovered && again.is_empty(), "the new file opens cleanly");
}

#[test]
fn make_room_drops_just_enough_of_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let s = Spool::open(&dir.path().join("w.redb"), 10 * (100 + RECORD_OVERHEAD)).unwrap().0;
    let rec = |i: usize| format!("{i:0100}").into_bytes();
    for i in 0..10 {
        assert_eq!(s.append([rec(i).as_slice()]).unwrap().dropped.count, 0);
    }
    assert_eq!(s.make_room(250).unwrap().count, 3, "three records of 100 free room for 250");
    assert_eq!(s.append([vec![b'r'; 250].as_slice()]).unwrap().dropped.count, 0, "the record then fits");
    assert_eq!(s.peek(1, u64::MAX).unwrap()[0].bytes, rec(3));
    assert_eq!(s.make_room(10).unwrap().count, 0, "room left over");
    assert_eq!(
        s.make_room(10 * (100 + RECORD_OVERHEAD) - RECORD_OVERHEAD).unwrap().count,
        7,
        "all of the bound: all of it but the one in flight (peeked above)"
    );
    assert_eq!(s.len(), 1);
}

#[test]
fn peek_respects_bytes_but_returns_at_least_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = Spool::open(&dir.path().join("w.redb"), 1 << 20).unwrap().0;
    s.append([vec![b'x'; 600].as_slice(), &[b'y'; 600], &[b'z'; 10]]).unwrap();
    assert_eq!(s.peek(10, 100).unwrap().len(), 1, "a large alert goes alone");
    assert_eq!(s.peek(10, 1300).unwrap().len(), 3);
    assert_eq!(s.peek(10, 1000).unwrap().len(), 1);
}

#[test]
fn a_damaged_file_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.redb");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let (s, recovered) = Spool::open(&path, 1 << 20).unwrap();
    assert!(recovered);
    assert!(s.is_empty());
    s.append([b"ok".as_slice()]).unwrap();
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
}

/// A spool damaged anyhow (bytes flipped, cut short, zeroed; a seeded
/// set of mutations of a real spool file) opens: as it was, or moved
/// aside and started anew. Never a panic, never a refusal, and the
/// spool it gives takes alerts.
#[test]
fn any_damaged_spool_opens_and_takes_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.redb");
    {
        let (s, _) = Spool::open(&good, 1 << 20).unwrap();
        for i in 0..50u32 {
            s.append([format!("alert {i}").as_bytes()]).unwrap();
        }
    }
    let bytes = std::fs::read(&good).unwrap();
    // A small xorshift: the same mutations on every run.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut recovered, mut kept) = (0, 0);
    for case in 0..80 {
        let mut damaged = bytes.clone();
        match case % 4 {
            0 => {
                for _ in 0..1 + next() % 16 {
                    let at = (next() as usize) % damaged.len();
                    damaged[at] ^= 1 << (next() % 8);
                }
            }
            1 => damaged.truncate((next() as usize) % damaged.len()),
            2 => {
                let at = (next() as usize) % damaged.len();
                let end = (at + 1 + (next() as usize) % 4096).min(damaged.len());
                damaged[at..end].fill(0);
            }
            _ => {
                let page = 4096 * ((next() as usize) % (damaged.len() / 4096).max(1));
                let end = (page + 4096).min(damaged.len());
                damaged[page..end].fill(0xff);
            }
        }
        let path = dir.path().join(format!("case-{case}.redb"));
        std::fs::write(&path, &damaged).unwrap();
        let (s, moved) = Spool::open(&path, 1 << 20).unwrap_or_else(|e| panic!("case {case}: {e}"));
        s.append([b"after".as_slice()]).unwrap_or_else(|e| panic!("case {case}: {e}"));
        let _ = s.peek(100, 1 << 20);
        if moved { recovered += 1 } else { kept += 1 }
    }
    eprintln!("damaged spools: {recovered} moved aside, {kept} opened as they were");
    assert!(recovered > 0, "the mutations damage some files");
}

#[test]
fn the_spool_file_is_the_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.redb");
    let _ = Spool::open(&path, 1 << 20).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}
