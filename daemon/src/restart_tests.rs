use super::*;

const MS: Duration = Duration::from_millis(1);

#[test]
fn backoff_doubles_from_100ms_to_a_minute_and_resets_after_a_long_run() {
    let mut b = Backoff::default();
    let short = Duration::from_secs(1);
    let delays: Vec<Duration> = (0..12).map(|_| b.next(short)).collect();
    assert_eq!(&delays[..4], &[100 * MS, 200 * MS, 400 * MS, 800 * MS]);
    assert_eq!(delays[9], 51_200 * MS);
    assert_eq!(delays[10], MAX);
    assert_eq!(delays[11], MAX);
    // A run of 10 s or more: back to the first delay.
    assert_eq!(b.next(Duration::from_secs(10)), 100 * MS);
    assert_eq!(b.next(short), 200 * MS);
    assert_eq!(b.next(Duration::from_secs(9)), 400 * MS);
}

#[test]
fn policies_decide_as_dockers() {
    use Occasion::*;
    use RestartPolicy::*;
    let r = |p, status, count, stopped, o| should_restart(p, status, count, stopped, o);
    assert!(!r(No, 1, 0, false, Exit));
    assert!(r(Always, 0, 100, false, Exit));
    assert!(r(Always, 1, 0, false, Exit));
    assert!(
        !r(Always, 137, 0, true, Exit),
        "a user's stop is not undone"
    );
    assert!(
        r(Always, 137, 0, true, DaemonStart),
        "but always comes back with berthd"
    );
    assert!(r(UnlessStopped, 0, 0, false, Exit));
    assert!(!r(UnlessStopped, 137, 0, true, DaemonStart));
    assert!(r(OnFailure(Some(2)), 1, 0, false, Exit));
    assert!(r(OnFailure(Some(2)), 1, 1, false, Exit));
    assert!(
        !r(OnFailure(Some(2)), 1, 2, false, Exit),
        "at most N restarts"
    );
    assert!(
        !r(OnFailure(Some(2)), 0, 0, false, Exit),
        "success is not a failure"
    );
    assert!(!r(OnFailure(None), 1, 0, true, Exit));
    assert!(r(OnFailure(None), 3, 1000, false, DaemonStart));
    // After a reboot the lost task counts as a failure (LOST).
    assert!(
        r(Always, LOST, 0, true, Reboot),
        "always comes back with the host"
    );
    assert!(r(UnlessStopped, LOST, 0, false, Reboot));
    assert!(!r(UnlessStopped, LOST, 0, true, Reboot));
    assert!(r(OnFailure(Some(2)), LOST, 1, false, Reboot));
    assert!(!r(OnFailure(Some(2)), LOST, 2, false, Reboot));
}
