//! Unit tests of container states, filters and signals.

use super::*;

fn c(id: &str, sb: &str, m: ContainerMetadata, labels: &[(&str, &str)]) -> CriContainer {
    let mut meta = m;
    meta.id = id.into();
    meta.sandbox_id = sb.into();
    meta.config = Some(cri::ContainerConfig {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    });
    CriContainer {
        record: Default::default(),
        meta,
    }
}

#[test]
fn states_and_filters() {
    let created = c(
        "abc1",
        "pod1",
        ContainerMetadata::default(),
        &[("app", "x")],
    );
    let running = c(
        "abd2",
        "pod1",
        ContainerMetadata {
            started: true,
            ..Default::default()
        },
        &[("app", "y")],
    );
    let exited = c(
        "ccc3",
        "pod2",
        ContainerMetadata {
            started: true,
            finished_at: 5,
            ..Default::default()
        },
        &[("app", "x"), ("tier", "db")],
    );
    assert_eq!(
        state_of(&created.meta),
        cri::ContainerState::ContainerCreated
    );
    assert_eq!(
        state_of(&running.meta),
        cri::ContainerState::ContainerRunning
    );
    assert_eq!(state_of(&exited.meta), cri::ContainerState::ContainerExited);
    let all = [&created, &running, &exited];
    let ids = |f: cri::ContainerFilter| -> Vec<String> {
        all.iter()
            .filter(|c| matches(c, &f))
            .map(|c| c.meta.id.clone())
            .collect()
    };
    assert_eq!(ids(Default::default()).len(), 3);
    assert_eq!(
        ids(cri::ContainerFilter {
            id: "ab".into(),
            ..Default::default()
        }),
        ["abc1", "abd2"]
    );
    assert_eq!(
        ids(cri::ContainerFilter {
            pod_sandbox_id: "pod2".into(),
            ..Default::default()
        }),
        ["ccc3"]
    );
    assert_eq!(
        ids(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32
            }),
            ..Default::default()
        }),
        ["abd2"]
    );
    assert_eq!(
        ids(cri::ContainerFilter {
            label_selector: [("app".to_string(), "x".to_string())].into(),
            ..Default::default()
        }),
        ["abc1", "ccc3"]
    );
}

#[test]
fn signals_by_name_or_number() {
    assert_eq!(parse_signal("SIGTERM").unwrap(), libc::SIGTERM);
    assert_eq!(parse_signal("quit").unwrap(), libc::SIGQUIT);
    assert_eq!(parse_signal("9").unwrap(), 9);
    assert!(parse_signal("SIGNOPE").is_err());
    let m = ContainerMetadata {
        stop_signal: "SIGUSR1".into(),
        ..Default::default()
    };
    let s = to_status(&CriContainer {
        record: Default::default(),
        meta: m,
    });
    assert_eq!(s.stop_signal, cri::Signal::Sigusr1 as i32);
}
