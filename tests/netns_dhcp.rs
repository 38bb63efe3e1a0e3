//! DHCP through a wasm delegate (root): the wasm macvlan with the reference
//! `dhcp` IPAM (Debian's `/usr/lib/cni/dhcp`), which needs the link in the
//! pod before it can send its DISCOVER. Each test runs its own DHCP server
//! (Debian's dnsmasq, on `ens3-peer` 192.168.1.1/24 in the test's node
//! namespace) and its own `dhcp daemon` on a socket in its scratch
//! directory (the NAD's `ipam.daemonSocketPath`), both killed on drop, so
//! the tests run in parallel with each other and with the other suites.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Netns;
use support::cluster::{Cluster, NETWORK_STATUS, error_message, mac_of};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";
const DHCP: &str = "/usr/lib/cni/dhcp";
/// A bound on a hang of any call here, not a timing.
const LIMIT: Duration = Duration::from_secs(120);

/// What the test's DHCP server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    /// Leases 192.168.1.50-60.
    Serving,
    /// None runs on the segment.
    Absent,
    /// Runs, but has no address for anyone (`static` range, no hosts).
    Refusing,
}

/// The test's DHCP server (dnsmasq in the node namespace) and `dhcp`
/// daemon, killed on drop; their files in `dir`.
struct Dhcp {
    dir: PathBuf,
    dnsmasq: Option<Child>,
    daemon: Child,
}

impl Dhcp {
    fn start(cluster: &Cluster, server: Server) -> Dhcp {
        assert!(
            Path::new(DNSMASQ).exists(),
            "{DNSMASQ} is missing: apt-get install dnsmasq-base (cargo xtask test installs it)"
        );
        let dir = cluster.path("dhcp");
        std::fs::create_dir_all(&dir).expect("dhcp dir");
        let node = &cluster.node.netns;
        node.ip(&["addr", "add", "192.168.1.1/24", "dev", "ens3-peer"]);
        let dnsmasq = (server != Server::Absent).then(|| {
            let range = match server {
                Server::Refusing => "192.168.1.50,static,255.255.255.0".to_string(),
                _ => "192.168.1.50,192.168.1.60,255.255.255.0,10m".to_string(),
            };
            Command::new("ip")
                .args(["netns", "exec", &node.name, DNSMASQ])
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--port=0",
                    "--user=root",
                    "--interface=ens3-peer",
                    "--bind-interfaces",
                    "--log-dhcp",
                ])
                .arg(format!("--dhcp-range={range}"))
                .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
                .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
                .arg(format!(
                    "--log-facility={}",
                    dir.join("dnsmasq.log").display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn dnsmasq")
        });
        // The daemon enters the pod's namespace by path for each lease; it
        // listens only on its own socket.
        let daemon_log = std::fs::File::create(dir.join("daemon.log")).expect("daemon log");
        let daemon = Command::new(DHCP)
            .args(["daemon", "-socketpath"])
            .arg(dir.join("dhcp.sock"))
            // Each try waits 2 s for an answer (default 10 s): keeps the
            // no-server tests short.
            .args(["-timeout", "2s", "-resendmax", "2s"])
            .stdin(Stdio::null())
            .stdout(daemon_log.try_clone().expect("log"))
            .stderr(daemon_log)
            .spawn()
            .expect("spawn the dhcp daemon");
        let dhcp = Dhcp {
            dir,
            dnsmasq,
            daemon,
        };
        dhcp.wait_for(
            |dhcp| dhcp.dir.join("dhcp.sock").exists(),
            "the daemon's socket",
        );
        if dhcp.dnsmasq.is_some() {
            dhcp.wait_for(|dhcp| dhcp.log().contains("DHCP, "), "dnsmasq serving DHCP");
        }
        dhcp
    }

    fn wait_for(&self, ready: impl Fn(&Dhcp) -> bool, what: &str) {
        let started = Instant::now();
        while !ready(self) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{what}: not ready after 10 s; dnsmasq log: {} daemon log: {}",
                self.log(),
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("dhcp.sock")
    }

    /// dnsmasq's log.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default()
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// The server's lease file: (mac, ip) per lease.
    fn leases(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.dir.join("leases"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.len() >= 3).then(|| (fields[1].to_string(), fields[2].to_string()))
            })
            .collect()
    }
}

impl Drop for Dhcp {
    fn drop(&mut self) {
        if let Some(dnsmasq) = &mut self.dnsmasq {
            let _ = dnsmasq.kill();
            let _ = dnsmasq.wait();
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// The wasm macvlan on `ens3` with the `dhcp` IPAM of `dhcp`'s daemon.
fn dhcp_nad(dhcp: &Dhcp) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "dhcp-conf",
        "type": "macvlan",
        "master": "ens3",
        "mode": "bridge",
        "ipam": {"type": "dhcp", "daemonSocketPath": dhcp.socket()}
    })
}

/// The IPv4 address of `dev` in `pod`, without prefix.
fn address_of(pod: &Netns, dev: &str) -> String {
    let addresses = pod.addresses(dev);
    assert_eq!(addresses.len(), 1, "{dev}: {addresses:?}");
    addresses[0].split('/').next().unwrap().to_string()
}

#[test]
fn a_pod_leases_through_the_wasm_macvlan_and_releases_on_del() {
    let cluster = Cluster::api();
    let dhcp = Dhcp::start(&cluster, Server::Serving);
    cluster.add_nad("dhcp-conf", &dhcp_nad(&dhcp));
    cluster.add_pod("uid-dhcp", "dhcp-conf");
    let pod = Netns::new("mwp");
    let cni = cluster.cni(&pod, "dhcp-one", "uid-dhcp");

    let output = cni.call_within("ADD", &cluster.config, LIMIT);
    output.ok();
    assert_eq!(
        support::link_names(&pod),
        vec!["eth0", "lo", "net1"],
        "{}",
        dhcp.daemon_log()
    );
    let ip = address_of(&pod, "net1");
    let octet: u8 = ip
        .strip_prefix("192.168.1.")
        .and_then(|last| last.parse().ok())
        .unwrap_or_else(|| panic!("{ip} is not from the server's range"));
    assert!((50..=60).contains(&octet), "{ip}");
    assert_eq!(pod.addresses("net1"), vec![format!("{ip}/24")]);
    let mac = mac_of(&pod, "net1");
    assert_eq!(
        dhcp.leases(),
        vec![(mac.clone(), ip.clone())],
        "the server leased net1's address to net1's MAC"
    );
    // The lease's router option became net1's default route (beside
    // eth0's, as the reference plugins add it).
    let defaults = pod.ip_json(&["-4", "route", "show", "default", "dev", "net1"]);
    assert_eq!(defaults[0]["gateway"], "192.168.1.1", "{defaults}");

    let status: Value = serde_json::from_str(
        &cluster
            .server()
            .pod_annotation("default", "samplepod", NETWORK_STATUS)
            .expect("network-status"),
    )
    .expect("json");
    let net1 = status
        .as_array()
        .and_then(|entries| entries.iter().find(|entry| entry["interface"] == "net1"))
        .unwrap_or_else(|| panic!("no net1 in {status}"));
    assert_eq!(net1["name"], "default/dhcp-conf");
    assert_eq!(net1["ips"], json!([ip]));
    assert_eq!(net1["mac"], mac);

    let checked = cni.call_within("CHECK", &cluster.config, LIMIT);
    checked.ok();

    cni.call_within("DEL", &cluster.config, LIMIT).ok();
    cluster.assert_nothing_left(&pod, "after DEL");
    assert!(
        dhcp.log()
            .contains(&format!("DHCPRELEASE(ens3-peer) {ip} {mac}")),
        "the lease was released from net1: {}",
        dhcp.log()
    );
    assert_eq!(dhcp.leases(), vec![], "the server forgot the lease");
}

#[test]
fn a_failure_after_the_lease_releases_it() {
    let cluster = Cluster::api();
    let dhcp = Dhcp::start(&cluster, Server::Serving);
    cluster.add_nad("dhcp-conf", &dhcp_nad(&dhcp));
    let mut bad = cluster.seed_config();
    bad["master"] = json!("nosuchdev0");
    cluster.add_nad("bad-conf", &bad);
    cluster.add_pod("uid-dhcp", "dhcp-conf,bad-conf");
    let pod = Netns::new("mwp");
    let output =
        cluster
            .cni(&pod, "dhcp-bad", "uid-dhcp")
            .call_within("ADD", &cluster.config, LIMIT);
    let message = error_message(&output);
    assert!(message.contains("nosuchdev0"), "{message}");
    cluster.assert_nothing_left(&pod, "after the failed ADD");
    let log = dhcp.log();
    assert!(
        log.contains("DHCPACK(ens3-peer)"),
        "net1 had its lease: {log}"
    );
    assert!(
        log.contains("DHCPRELEASE(ens3-peer)"),
        "the rollback released it: {log}"
    );
    assert_eq!(dhcp.leases(), vec![]);
}

/// An ADD that cannot get a lease: the error, and that nothing is left;
/// then `server_saw` (while the scratch directory exists). Returns how long
/// the ADD took.
fn add_without_a_lease(server: Server, server_saw: impl FnOnce(&Dhcp)) -> Duration {
    let cluster = Cluster::api();
    let dhcp = Dhcp::start(&cluster, server);
    cluster.add_nad("dhcp-conf", &dhcp_nad(&dhcp));
    cluster.add_pod("uid-dhcp", "dhcp-conf");
    let pod = Netns::new("mwp");
    let started = Instant::now();
    let output =
        cluster
            .cni(&pod, "dhcp-none", "uid-dhcp")
            .call_within("ADD", &cluster.config, LIMIT);
    let took = started.elapsed();
    eprintln!("{server:?}: the failed ADD took {took:?}");
    assert_eq!(output.error_code(), 999, "the dhcp plugin's own code");
    let message = error_message(&output);
    for part in [
        "IPAM plugin dhcp for net1 of network default/dhcp-conf",
        "the link was removed",
        "error calling DHCP.Allocate",
        "a DHCP server answering on the master's segment",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    cluster.assert_nothing_left(&pod, &format!("{server:?}"));
    assert!(
        dhcp.daemon_log()
            .contains("dhcp-none/dhcp-conf/net1: acquiring lease"),
        "the daemon tried from net1: {}",
        dhcp.daemon_log()
    );
    server_saw(&dhcp);
    took
}

#[test]
fn without_a_dhcp_server_the_add_fails_and_leaves_nothing() {
    let took = add_without_a_lease(Server::Absent, |dhcp| {
        assert!(
            dhcp.daemon_log().contains("no DHCP packet received"),
            "{}",
            dhcp.daemon_log()
        );
    });
    // The daemon's tries with -timeout 2s: about 18 s measured.
    assert!(took < Duration::from_secs(60), "{took:?}");
}

#[test]
fn a_dhcp_server_that_refuses_fails_the_add_and_leaves_nothing() {
    add_without_a_lease(Server::Refusing, |dhcp| {
        let log = dhcp.log();
        assert!(
            log.contains("DHCPDISCOVER(ens3-peer)") && log.contains("no address available"),
            "the server saw net1's DISCOVER and had nothing for it: {log}"
        );
        assert_eq!(dhcp.leases(), vec![]);
    });
}
