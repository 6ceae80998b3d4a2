//! The daemon's life on a host (issue 10): what it refuses to start on.

use anyhow::{ensure, Result};
use balancer_tests::{
    balancer::{CliOutput, DaemonFlags, REFUSED},
    lab::Lab,
    traffic::LongLived,
};

/// Requires exit code `code`, nothing on standard output and exactly one line on standard
/// error, starting with `error:` and containing `expected`.
fn one_line_error(out: &CliOutput, code: i32, expected: &str) -> Result<()> {
    let lines: Vec<&str> = out.stderr.trim().lines().collect();
    ensure!(
        out.code == Some(code)
            && lines.len() == 1
            && lines[0].starts_with("error:")
            && lines[0].contains(expected)
            && out.stdout.is_empty(),
        "expected exit code {code} and one error line with {expected:?}: {out:?}"
    );
    Ok(())
}

/// Whether the daemon's log holds a line containing `text`.
fn logged(lab: &Lab, text: &str) -> Result<bool> {
    Ok(std::fs::read_to_string(lab.balancer.log_path())?.contains(text))
}

#[test]
fn a_missing_state_file_does_not_wipe_a_running_data_plane() -> Result<()> {
    let mut lab = Lab::new("blf1")?;
    let service = lab.weighted_service("web", false, &[100; 4])?;
    let mut long_lived = LongLived::open(&lab.client, service, 20, &[])?;
    let original = long_lived.original_backends().to_vec();

    // A restart with a mistyped --state-dir: refused in one line, nothing touched.
    lab.balancer.kill9()?;
    let mistyped = lab.balancer.scratch("mistyped");
    let wrong = DaemonFlags {
        state_dir: Some(mistyped.clone()),
        ..DaemonFlags::default()
    };
    let out = lab.balancer.run_daemon_to_exit(&wrong)?;
    one_line_error(&out, REFUSED, "--empty-state")?;
    ensure!(
        out.stderr
            .contains(&mistyped.join("state.json").display().to_string())
            && out.stderr.contains("serves 1 VIP"),
        "the refusal names neither the state file nor what is served: {out:?}"
    );
    ensure!(
        !mistyped.exists(),
        "the refused daemon created {mistyped:?}"
    );
    ensure!(
        long_lived.ping_all()? == original,
        "established connections lost their backends"
    );
    let dist = lab.client.distribution(service, 200, &[])?;
    ensure!(dist.counts.len() == 4, "new flows: {:?}", dist.counts);

    // Told to, it takes the data plane over with no services.
    let told = DaemonFlags {
        extra: vec!["--empty-state".into()],
        ..wrong
    };
    lab.balancer.start_with(&told)?;
    ensure!(
        lab.balancer.status()?.services.is_empty(),
        "services after --empty-state"
    );
    ensure!(
        logged(&lab, "(--empty-state); its 1 VIP(s) are removed")?,
        "the takeover is not in the log:\n{}",
        lab.balancer.log_tail()
    );
    ensure!(
        lab.client.ask_once(service, None).is_err(),
        "the VIP is still balanced"
    );
    Ok(())
}
