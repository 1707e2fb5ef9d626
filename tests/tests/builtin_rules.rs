//! Issue 14: every built-in rule fires on traffic between two containers,
//! and its alert names the attacking container.

use std::time::Duration;

use portwarden_tests::attacks::{VICTIM, builtin_rule_attacks, builtin_sids};
use portwarden_tests::nids::NidsAgent;
use portwarden_tests::{TestContainer, docker_ok};

#[test]
fn every_builtin_rule_has_an_attack_that_fires_it() {
    let mut covered: Vec<u64> = builtin_rule_attacks("192.0.2.1").into_iter().map(|(sid, _)| sid).collect();
    let mut sids = builtin_sids();
    covered.sort_unstable();
    sids.sort_unstable();
    assert!(sids.len() >= 25, "the built-in set has {} rules", sids.len());
    assert_eq!(covered, sids, "each built-in rule needs exactly one attack in tests/src/attacks.rs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_builtin_rule_fires_from_a_container() {
    // The built-in rules only: the test's own rule file is empty.
    let agent = NidsAgent::start("builtin-rules", "", "builtin_rules = true").await;
    let victim = TestContainer::run_cmd("rules-victim", &[], VICTIM);
    let attacker = TestContainer::run("rules-attacker", &[]);
    agent.wait_captured(&victim.id).await;
    agent.wait_captured(&attacker.id).await;
    let attacks = builtin_rule_attacks(&victim.ip());
    // One rule at a time, each in its own connection (or query).
    let script: Vec<String> = attacks.iter().map(|(_, command)| format!("{command} ; ")).collect();
    docker_ok(&["exec", &attacker.id, "sh", "-c", &format!("{} true", script.concat())]);
    // Alerts for the whole batch, or a list of the rules that stayed silent.
    let fired = |agent: &NidsAgent| -> Vec<u64> {
        let events = agent.events();
        attacks
            .iter()
            .map(|(sid, _)| *sid)
            .filter(|sid| {
                events.iter().any(|e| {
                    e["event_type"] == "alert"
                        && e["alert"]["signature_id"] == *sid
                        && e["container"]["id"] == attacker.id
                })
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while fired(&agent).len() < attacks.len() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let seen = fired(&agent);
    let missing: Vec<String> = attacks
        .iter()
        .filter(|(sid, _)| !seen.contains(sid))
        .map(|(sid, command)| format!("{sid}: {command}"))
        .collect();
    assert!(missing.is_empty(), "built-in rules that did not fire for the attacker: {missing:#?}");
    // Every alert names one of the two containers.
    for alert in agent.events().iter().filter(|e| e["event_type"] == "alert") {
        let id = alert["container"]["id"].as_str().unwrap_or_default();
        assert!(id == attacker.id || id == victim.id, "alert names neither container: {alert}");
    }
}
