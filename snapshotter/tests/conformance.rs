//! The conformance suite, run for both snapshotters.

mod overlayfs {
    use berth_snapshotter::overlay::Overlay;
    berth_snapshotter::conformance_tests!(|root: &std::path::Path| {
        Box::new(Overlay::open(root).expect("open overlay"))
            as Box<dyn berth_snapshotter::Snapshotter>
    });
}

mod native {
    use berth_snapshotter::native::Native;
    berth_snapshotter::conformance_tests!(|root: &std::path::Path| {
        Box::new(Native::open(root).expect("open native"))
            as Box<dyn berth_snapshotter::Snapshotter>
    });
}
