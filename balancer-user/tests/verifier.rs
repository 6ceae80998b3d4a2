//! The program passes the kernel verifier and runs.
use balancer_user::dataplane::{pins::PinLayout, DataPlane};

#[test]
fn program_loads_and_passes_non_ip() {
    let root =
        std::path::PathBuf::from(format!("/sys/fs/bpf/balancer-test-{}", std::process::id()));
    let pins = PinLayout::new(&root, "verifier");
    let mut dp = DataPlane::load_unattached(&pins, 1024).expect("load");
    let mut arp = vec![0u8; 60];
    arp[12] = 0x08;
    arp[13] = 0x06;
    let run = dp.test_run(&arp, 1).expect("run");
    assert_eq!(run.action, 2);
    dp.teardown().unwrap();
    std::fs::remove_dir_all(&root).ok();
}
