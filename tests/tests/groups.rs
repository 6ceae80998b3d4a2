//! Services with three and four groups: the split reaches clients exactly as its stored
//! cells say, a restarted daemon restores the same layout (with three or more groups the
//! layout depends on the history of changes, so it must come from the state file), and a
//! canary between two groups leaves the others' clients where they are.

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::{ensure, Result};
use balancer_tests::{lab::Lab, split::StoredSplit};

const GROUPS: [&str; 4] = ["a", "b", "c", "d"];
const CLIENTS: u8 = 120;

/// The group each client's new flows get under the stored split of `web`.
fn expected_groups(lab: &Lab, clients: &[IpAddr]) -> Result<BTreeMap<IpAddr, String>> {
    let split = StoredSplit::load(&lab.balancer.state_file(), "web")?;
    clients
        .iter()
        .map(|&client| Ok((client, split.group_of(client)?.to_string())))
        .collect()
}

/// The group that answers each client (backend `bI` is the only member of `groups[I]`).
fn observed_groups(
    lab: &Lab,
    clients: &[IpAddr],
    groups: &[&str],
) -> Result<BTreeMap<IpAddr, String>> {
    let vip = Lab::vip(false);
    clients
        .iter()
        .map(|&client| {
            let backend = lab.client.ask_once(vip, Some(client))?;
            let index: usize = backend.trim_start_matches('b').parse()?;
            Ok((client, groups[index].to_string()))
        })
        .collect()
}

#[test]
fn four_groups_follow_their_stored_cells_across_a_restart() -> Result<()> {
    let mut lab = Lab::with_extra_clients("blg1", CLIENTS)?;
    lab.service_with("web", false, &GROUPS, &["--affinity", "client"])?;
    let clients: Vec<IpAddr> = (0..usize::from(CLIENTS))
        .map(|i| lab.topology.extra_client_v4(i))
        .collect();
    // A history that a layout computed from the shares alone would not reproduce.
    for split in [
        ["a=40", "b=30", "c=20", "d=10"],
        ["a=25", "b=25", "c=25", "d=25"],
        ["a=10", "b=20", "c=30", "d=40"],
        ["a=40", "b=30", "c=20", "d=10"],
    ] {
        lab.balancer
            .ok(&[&["split", "web"][..], &split[..]].concat())?;
        let expected = expected_groups(&lab, &clients)?;
        let observed = observed_groups(&lab, &clients, &GROUPS)?;
        ensure!(
            observed == expected,
            "split {split:?}: clients reach other groups than their cells say"
        );
        let shown = lab.shown_split()?;
        ensure!(shown == split, "status shows {shown:?} for {split:?}");
    }
    let before = observed_groups(&lab, &clients, &GROUPS)?;
    let per_group = before.values().fold(BTreeMap::new(), |mut m, g| {
        *m.entry(g.clone()).or_insert(0) += 1;
        m
    });
    ensure!(
        per_group.len() == 4,
        "every group should have clients: {per_group:?}"
    );
    lab.balancer.restart()?;
    // New connections from the same clients after the restart: the same layout.
    let after = observed_groups(&lab, &clients, &GROUPS)?;
    ensure!(
        after == before,
        "the restart changed which group clients reach"
    );
    ensure!(
        after == expected_groups(&lab, &clients)?,
        "after the restart clients do not follow the stored cells"
    );
    Ok(())
}

/// The clients in `groups` that reach `group`.
fn clients_of(groups: &BTreeMap<IpAddr, String>, group: &str) -> Vec<IpAddr> {
    groups
        .iter()
        .filter(|(_, g)| *g == group)
        .map(|(c, _)| *c)
        .collect()
}

#[test]
fn a_canary_between_two_of_three_groups_leaves_the_third_alone() -> Result<()> {
    const THREE: [&str; 3] = ["blue", "green", "gray"];
    let lab = Lab::with_extra_clients("blg2", CLIENTS)?;
    lab.service_with("web", false, &THREE, &["--affinity", "client"])?;
    let clients: Vec<IpAddr> = (0..usize::from(CLIENTS))
        .map(|i| lab.topology.extra_client_v4(i))
        .collect();
    lab.balancer
        .ok(&["split", "web", "blue=60", "green=0", "gray=40"])?;
    let gray = clients_of(&observed_groups(&lab, &clients, &THREE)?, "gray");
    ensure!(!gray.is_empty(), "no client reaches gray");

    // The step is 25% of the 60% blue and green hold together.
    lab.start_canary("25,50", "10m", &[])?;
    ensure!(lab.shown_split()? == ["blue=45", "green=15", "gray=40"]);
    let step = observed_groups(&lab, &clients, &THREE)?;
    ensure!(
        step == expected_groups(&lab, &clients)?,
        "step 1: clients reach other groups than their cells say"
    );
    ensure!(
        clients_of(&step, "gray") == gray,
        "step 1 moved gray's clients"
    );
    let green = clients_of(&step, "green");
    ensure!(!green.is_empty(), "no client reached green at 15%");

    // Abort: the pair's share returns to blue; gray keeps its clients.
    lab.balancer.ok(&["canary", "abort", "web"])?;
    ensure!(lab.shown_split()? == ["blue=60", "green=0", "gray=40"]);
    let aborted = observed_groups(&lab, &clients, &THREE)?;
    ensure!(
        aborted == expected_groups(&lab, &clients)?,
        "abort: clients reach other groups than their cells say"
    );
    ensure!(
        clients_of(&aborted, "gray") == gray,
        "the abort moved gray's clients"
    );
    ensure!(
        green.iter().all(|c| aborted[c] == "blue"),
        "the abort sent green's clients elsewhere than blue"
    );
    Ok(())
}
