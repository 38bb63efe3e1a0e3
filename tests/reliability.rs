//! Reliability (root): the real binary under load, beside the reference
//! host-local, with guests that trap or plan hostile things, killed with
//! SIGKILL at random points, and fed bad input. Every test checks the
//! kernel (pod and node links, sysctls, netlink events), the IPAM
//! directory, the attachment cache and the compiled-code cache: whatever
//! goes wrong, the node is left as it was.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Barrier;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    Cni, CniOutput, Netns, Node, binary, delegates_config, files, scratch, seed_netconf, unique,
};

const REFERENCE_HOST_LOCAL: &str = "/usr/lib/cni/host-local";
const CNI_PATH: &str = "/usr/lib/cni";

/// Every link of `netns` with what a plan could change (flags, MTU, MAC,
/// master, kind), sorted by name.
fn link_state(netns: &Netns) -> Vec<Value> {
    let mut state: Vec<Value> = netns
        .ip_json(&["-d", "link", "show"])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|link| {
            json!({
                "name": link["ifname"],
                "flags": link["flags"],
                "mtu": link["mtu"],
                "address": link["address"],
                "master": link["master"],
                "link": link["link"],
                "kind": link["linkinfo"]["info_kind"],
            })
        })
        .collect();
    state.sort_by_key(|link| link["name"].as_str().unwrap_or_default().to_string());
    state
}

/// The node namespace holds only its own links.
fn assert_node_links(node: &Node, what: &str) {
    assert_eq!(
        support::link_names(&node.netns),
        vec!["ens3", "ens3-peer", "lo"],
        "{what}: the node keeps only its own links"
    );
}

/// The reservations of one host-local network directory: IP → file content.
fn reservations(network_dir: &Path) -> BTreeMap<String, String> {
    files(network_dir)
        .into_iter()
        .filter(|name| name.parse::<IpAddr>().is_ok())
        .map(|name| {
            let content = std::fs::read_to_string(network_dir.join(&name))
                .unwrap_or_else(|err| panic!("reservation {name}: {err}"));
            (name, content)
        })
        .collect()
}

/// The attachment cache files under `cni_dir`.
fn cache_files(cni_dir: &Path) -> Vec<String> {
    files(&cni_dir.join("multus-wasm"))
}

/// Every file or directory under `root` (recursively) whose name starts with
/// `.` or ends with `.tmp`: what a killed writer leaves half written.
fn temporaries(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.ends_with(".tmp") {
                found.push(entry.path());
            }
            if entry.file_type().map(|kind| kind.is_dir()).unwrap_or(false) {
                pending.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

/// The address (without prefix) of the first IP of a result.
fn result_ip(result: &Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in the result {result}"))
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// The CNI environment `Cni::call_raw` gives the binary, as pairs.
fn cni_env(cni: &Cni, command: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", &cni.container_id),
        ("CNI_NETNS", &cni.netns),
        ("CNI_IFNAME", &cni.ifname),
        ("CNI_PATH", CNI_PATH),
        ("CNI_ARGS", &cni.args),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect();
    env.extend(cni.extra_env.iter().cloned());
    env
}

/// Spawn `program` with `env` (nothing else) and `stdin` written and closed.
fn spawn(mut command: Command, env: &[(String, String)], stdin: &[u8]) -> Child {
    command
        .env_clear()
        .envs(
            env.iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn");
    let mut pipe = child.stdin.take().expect("stdin");
    // A child killed early closes its end: a failed write is fine then.
    let _ = pipe.write_all(stdin);
    drop(pipe);
    child
}

fn wait(child: Child) -> CniOutput {
    let output = child.wait_with_output().expect("wait");
    CniOutput {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The binary run in the node's namespace through `nsenter`, which execs it:
/// the child's pid is the binary's.
fn spawn_binary_nsenter(cni: &Cni, command: &str, stdin: &[u8]) -> Child {
    let mut launcher = Command::new("nsenter");
    launcher
        .arg(format!("--net={}", cni.node.netns.path()))
        .arg(binary());
    spawn(launcher, &cni_env(cni, command), stdin)
}

/// `Cni::call_raw` with some variables removed (not just empty) and others
/// overridden.
fn call_with_env(
    cni: &Cni,
    command: &str,
    stdin: &[u8],
    remove: &[&str],
    set: &[(&str, &str)],
) -> CniOutput {
    let mut env: Vec<(String, String)> = cni_env(cni, command)
        .into_iter()
        .filter(|(key, _)| !remove.contains(&key.as_str()))
        .collect();
    env.extend(
        set.iter()
            .map(|(key, value)| (key.to_string(), value.to_string())),
    );
    let mut launcher = Command::new("ip");
    launcher
        .args(["netns", "exec", &cni.node.netns.name])
        .arg(binary());
    wait(spawn(launcher, &env, stdin))
}

/// The reference host-local exec'd directly as an IPAM plugin on `netconf`.
fn reference_host_local(command: &str, id: &str, netns: &str, netconf: &Value) -> Child {
    let env: Vec<(String, String)> = [
        ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "net1"),
        ("CNI_PATH", CNI_PATH),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect();
    spawn(
        Command::new(REFERENCE_HOST_LOCAL),
        &env,
        &serde_json::to_vec(netconf).expect("json"),
    )
}

/// A macvlan netconf on `ens3` with host-local on 10.50.0.0/24 (253 usable
/// addresses) under `data_dir`.
fn big_netconf(name: &str, data_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "macvlan",
        "master": "ens3",
        "mode": "bridge",
        "ipam": {
            "type": "host-local",
            "subnet": "10.50.0.0/24",
            "dataDir": data_dir
        }
    })
}

/// Run `work(index)` on `count` threads released together, collecting the
/// results in index order.
fn all_at_once<T: Send>(count: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(count);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .map(|index| {
                let barrier = &barrier;
                let work = &work;
                scope.spawn(move || {
                    barrier.wait();
                    work(index)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("worker thread"))
            .collect()
    })
}

const PARALLEL: usize = 64;

/// 64 ADDs of the binary at once (a cold compiled-code cache, so they also
/// race to compile), one pod each, on one host-local network: 64 distinct
/// addresses in the results, in the reservation files (owned by the right
/// container) and in the pods; then 64 DELs at once leave no reservation,
/// no link, no cache and no temporary file.
#[test]
fn sixty_four_parallel_adds_get_distinct_addresses_and_parallel_dels_free_them() {
    let node = Node::new();
    let dir = scratch();
    let data = dir.path().join("ipam");
    let network_dir = data.join("parallel");
    let config = delegates_config(dir.path(), vec![big_netconf("parallel", &data)]);
    let pods: Vec<Netns> = (0..PARALLEL).map(|_| Netns::new("mwr")).collect();
    let cnis: Vec<Cni> = pods
        .iter()
        .enumerate()
        .map(|(index, pod)| {
            let mut cni = Cni::new(&node, pod, &format!("par-{index}"));
            cni.ifname = "net1".into();
            cni
        })
        .collect();

    // Cold cache too: the 64 first calls race to compile the plugins.
    let started = Instant::now();
    let outputs = all_at_once(PARALLEL, |index| cnis[index].call("ADD", &config));
    eprintln!("{PARALLEL} parallel ADDs: {:?}", started.elapsed());
    let mut owner_of: BTreeMap<String, String> = BTreeMap::new();
    for (index, output) in outputs.iter().enumerate() {
        assert_eq!(
            output.code, 0,
            "ADD {index} failed: {} {}",
            output.stdout, output.stderr
        );
        let result = output.json();
        let address = result["ips"][0]["address"].as_str().unwrap_or_default();
        assert!(
            address.starts_with("10.50.0.") && address.ends_with("/24"),
            "ADD {index}: {result}"
        );
        let ip = result_ip(&result);
        if let Some(previous) = owner_of.insert(ip.clone(), cnis[index].container_id.clone()) {
            panic!(
                "{ip} given to both {previous} and {}",
                cnis[index].container_id
            );
        }
        assert_eq!(
            pods[index].addresses("net1"),
            vec![address.to_string()],
            "pod {index} has its address in the kernel"
        );
    }
    assert_eq!(owner_of.len(), PARALLEL, "distinct addresses");
    let on_disk = reservations(&network_dir);
    assert_eq!(
        on_disk.keys().collect::<Vec<_>>(),
        owner_of.keys().collect::<Vec<_>>(),
        "the reservation files are exactly the returned addresses"
    );
    for (ip, content) in &on_disk {
        assert_eq!(content, &format!("{}\r\nnet1", owner_of[ip]), "{ip}");
    }
    assert_eq!(cache_files(&dir.path().join("cni")).len(), PARALLEL);

    let started = Instant::now();
    let outputs = all_at_once(PARALLEL, |index| cnis[index].call("DEL", &config));
    eprintln!("{PARALLEL} parallel DELs: {:?}", started.elapsed());
    for (index, output) in outputs.iter().enumerate() {
        assert_eq!(
            output.code, 0,
            "DEL {index} failed: {} {}",
            output.stdout, output.stderr
        );
    }
    assert!(
        reservations(&network_dir).is_empty(),
        "{:?}",
        reservations(&network_dir)
    );
    for (index, pod) in pods.iter().enumerate() {
        assert_eq!(
            support::link_names(pod),
            vec!["lo"],
            "pod {index} after DEL"
        );
    }
    assert!(cache_files(&dir.path().join("cni")).is_empty());
    assert_node_links(&node, "after the parallel DELs");
    let leftovers = temporaries(dir.path());
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// 32 ADDs of ours and 32 of the reference host-local (exec'd directly as
/// an IPAM plugin) at once on one dataDir: they share its lock, so 64
/// distinct addresses, every reservation `<id>\r\nnet1` of the container
/// that got it; then all the DELs at once (ours through the binary, the
/// reference's through host-local DEL) leave no reservation.
#[test]
fn ours_and_the_reference_host_local_allocate_in_parallel_on_one_directory() {
    const EACH: usize = PARALLEL / 2;
    let node = Node::new();
    let dir = scratch();
    let data = dir.path().join("ipam");
    let network_dir = data.join("shared");
    let netconf = big_netconf("shared", &data);
    let config = delegates_config(dir.path(), vec![netconf.clone()]);
    let pods: Vec<Netns> = (0..EACH).map(|_| Netns::new("mwr")).collect();
    // The reference only needs CNI_NETNS to name something that exists.
    let reference_netns = Netns::new("mwr");
    let cnis: Vec<Cni> = pods
        .iter()
        .enumerate()
        .map(|(index, pod)| {
            let mut cni = Cni::new(&node, pod, &format!("ours-{index}"));
            cni.ifname = "net1".into();
            cni
        })
        .collect();
    let reference_id = |index: usize| format!("ref-{index}");

    // Even workers: ours; odd: the reference.
    let outputs = all_at_once(2 * EACH, |worker| {
        let index = worker / 2;
        if worker % 2 == 0 {
            (
                cnis[index].container_id.clone(),
                cnis[index].call("ADD", &config),
            )
        } else {
            let id = reference_id(index);
            let child = reference_host_local("ADD", &id, &reference_netns.path(), &netconf);
            (id, wait(child))
        }
    });
    let mut owner_of: BTreeMap<String, String> = BTreeMap::new();
    for (id, output) in &outputs {
        assert_eq!(
            output.code, 0,
            "ADD of {id} failed: {} {}",
            output.stdout, output.stderr
        );
        let ip = result_ip(&output.json());
        if let Some(previous) = owner_of.insert(ip.clone(), id.clone()) {
            panic!("{ip} given to both {previous} and {id}");
        }
    }
    assert_eq!(owner_of.len(), 2 * EACH, "distinct addresses");
    let on_disk = reservations(&network_dir);
    assert_eq!(
        on_disk.keys().collect::<Vec<_>>(),
        owner_of.keys().collect::<Vec<_>>(),
        "the reservation files are exactly the returned addresses"
    );
    for (ip, content) in &on_disk {
        assert_eq!(content, &format!("{}\r\nnet1", owner_of[ip]), "{ip}");
    }
    for (index, pod) in pods.iter().enumerate() {
        let ip = result_ip(&outputs[2 * index].1.json());
        assert_eq!(pod.addresses("net1"), vec![format!("{ip}/24")]);
    }

    let outputs = all_at_once(2 * EACH, |worker| {
        let index = worker / 2;
        if worker % 2 == 0 {
            (
                cnis[index].container_id.clone(),
                cnis[index].call("DEL", &config),
            )
        } else {
            let id = reference_id(index);
            let child = reference_host_local("DEL", &id, &reference_netns.path(), &netconf);
            (id, wait(child))
        }
    });
    for (id, output) in &outputs {
        assert_eq!(
            output.code, 0,
            "DEL of {id} failed: {} {}",
            output.stdout, output.stderr
        );
    }
    assert!(
        reservations(&network_dir).is_empty(),
        "{:?}",
        reservations(&network_dir)
    );
    for pod in &pods {
        assert_eq!(support::link_names(pod), vec!["lo"]);
    }
    assert!(cache_files(&dir.path().join("cni")).is_empty());
    assert_node_links(&node, "after the DELs");
}

/// Each trap of the hostile delegate, with the limits that provoke it and
/// its CNI code. The host-local IPAM runs first (as wasm, under the same
/// limits, which it stays well within) and must be released.
#[test]
fn a_guest_trapping_mid_add_leaves_nothing() {
    let node = Node::new();
    let dir = scratch();
    let data = dir.path().join("ipam");
    let cni_dir = dir.path().join("cni");
    let hostile = support::plugin(test_artifacts::HOSTILE);
    let digest = hostile["sha256"].as_str().expect("sha256").to_string();
    let cases = [
        (
            "trap-deadline",
            "loop",
            json!({"timeoutMs": 200, "fuel": 1u64 << 60}),
            101,
        ),
        ("trap-fuel", "loop", json!({"fuel": 30_000_000}), 102),
        ("trap-memory", "memory-bomb", json!({"memoryMiB": 16}), 103),
        ("trap-panic", "panic", json!({}), 105),
    ];
    for (network, behaviour, limits, code) in cases {
        let netconf = json!({
            "cniVersion": "1.0.0",
            "name": network,
            "type": "hostile",
            "behaviour": behaviour,
            "message": "reliability-panic",
            "ipam": {
                "type": "host-local",
                "subnet": "10.60.0.0/24",
                "dataDir": data
            }
        });
        let mut config = delegates_config(dir.path(), vec![netconf]);
        config["wasmPlugins"]["hostile"] = hostile.clone();
        config["wasmLimits"] = limits;
        let pod = Netns::new("mwr");
        let mut cni = Cni::new(&node, &pod, network);
        cni.ifname = "net1".into();
        let started = Instant::now();
        let output = cni.call("ADD", &config);
        let elapsed = started.elapsed();
        assert_eq!(output.error_code(), code, "{network}: {}", output.stdout);
        let message = output.json()["msg"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            message.contains("hostile") && message.contains(&digest),
            "{network}: the delegate trapped (not the IPAM), named with its sha256: {message}"
        );
        eprintln!("{network}: {elapsed:?}: {message}");
        if behaviour == "panic" {
            assert!(message.contains("reliability-panic"), "{message}");
        }
        assert!(
            elapsed < Duration::from_secs(20),
            "{network}: took {elapsed:?}"
        );
        // The IPAM did allocate (it records its last pick), then released.
        let network_dir = data.join(network);
        assert!(
            network_dir.join("last_reserved_ip.0").exists(),
            "{network}: the IPAM never ran: {:?}",
            files(&network_dir)
        );
        assert!(
            reservations(&network_dir).is_empty(),
            "{network}: reservation left: {:?}",
            reservations(&network_dir)
        );
        assert_eq!(
            support::link_names(&pod),
            vec!["lo"],
            "{network}: links left in the pod"
        );
        assert!(
            cache_files(&cni_dir).is_empty(),
            "{network}: cache left: {:?}",
            cache_files(&cni_dir)
        );
        assert_node_links(&node, network);
    }
    let leftovers = temporaries(dir.path());
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A small deterministic generator (Knuth's MMIX LCG), so a failing
/// iteration reproduces from its number.
struct Lcg(u64);

impl Lcg {
    fn new(seed: u64) -> Lcg {
        let mut lcg = Lcg(seed ^ 0x9e37_79b9_7f4a_7c15);
        lcg.next();
        lcg
    }

    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    /// Uniform-ish in `0..bound`.
    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.next() % bound }
    }
}

const KILL_ITERATIONS: u64 = 20;
/// Every fifth iteration starts with an empty compiled-code cache, so kills
/// also land while the plugins compile.
const COLD_EVERY: u64 = 5;

/// The seed ADD killed with SIGKILL after a random delay (seeded by the
/// iteration, spread over the uninterrupted ADD's duration; every fifth
/// iteration with an empty compiled-code cache, so over the compile too),
/// then a normal DEL: it succeeds and leaves no link (in the pod or the
/// node), reservation, attachment cache or temporary file in the IPAM,
/// cni or compiled-code directories.
#[test]
fn sigkill_at_random_points_then_del_leaves_a_clean_node() {
    let node = Node::new();
    let dir = scratch();
    let data = dir.path().join("ipam");
    let network_dir = data.join("macvlan-conf");
    let cni_dir = dir.path().join("cni");
    let wasm_cache = dir.path().join("cache");
    let config = delegates_config(dir.path(), vec![seed_netconf(&data)]);
    let stdin = serde_json::to_vec(&config).expect("json");

    let timed_add = |id: &str| -> Duration {
        let pod = Netns::new("mwr");
        let mut cni = Cni::new(&node, &pod, id);
        cni.ifname = "net1".into();
        let started = Instant::now();
        let output = wait(spawn_binary_nsenter(&cni, "ADD", &stdin));
        let elapsed = started.elapsed();
        output.ok();
        let addresses = pod.addresses("net1");
        assert!(
            addresses.len() == 1 && addresses[0].starts_with("192.168.1.2"),
            "{addresses:?}"
        );
        cni.call("DEL", &config).ok();
        elapsed
    };
    let cold = timed_add("kill-cold");
    // The least of three: other suites running beside this one only ever
    // make an ADD slower.
    let warm = (0..3)
        .map(|index| timed_add(&format!("kill-warm-{index}")))
        .min()
        .expect("three runs");
    eprintln!("uninterrupted ADD: cold {cold:?}, warm {warm:?}");

    let mut interrupted = 0;
    let mut half_done = 0;
    for iteration in 0..KILL_ITERATIONS {
        let mut rng = Lcg::new(iteration);
        let is_cold = iteration % COLD_EVERY == 0;
        if is_cold {
            std::fs::remove_dir_all(&wasm_cache).expect("empty the compiled-code cache");
        }
        let span = if is_cold { cold } else { warm };
        // Over the ADD's whole normal duration, and a little past it.
        let delay = Duration::from_micros(rng.below(span.as_micros() as u64 * 6 / 5));
        let pod = Netns::new("mwr");
        let id = format!("kill-{iteration}");
        let mut cni = Cni::new(&node, &pod, &id);
        cni.ifname = "net1".into();
        let what = format!("iteration {iteration} (cold {is_cold}, SIGKILL after {delay:?})");

        let mut child = spawn_binary_nsenter(&cni, "ADD", &stdin);
        std::thread::sleep(delay);
        let finished = child.try_wait().expect("try_wait").is_some();
        if !finished {
            child.kill().expect("SIGKILL");
            interrupted += 1;
        }
        let status = child.wait().expect("wait");
        eprintln!("{what}: exit {status:?}");

        let left = (
            support::link_names(&pod).len() > 1,
            !reservations(&network_dir).is_empty(),
            !cache_files(&cni_dir).is_empty(),
        );
        if left != (false, false, false) {
            half_done += 1;
        }
        let half_written: Vec<PathBuf> = [&data, &cni_dir, &wasm_cache]
            .into_iter()
            .flat_map(|root| temporaries(root))
            .collect();
        eprintln!(
            "{what}: before DEL (links, reservation, cache) = {left:?}, temporaries {half_written:?}"
        );
        let del = cni.call("DEL", &config);
        assert_eq!(
            del.code, 0,
            "{what}: DEL failed: {} {}",
            del.stdout, del.stderr
        );
        assert_eq!(
            support::link_names(&pod),
            vec!["lo"],
            "{what}: links left in the pod"
        );
        assert_node_links(&node, &what);
        assert!(
            reservations(&network_dir).is_empty(),
            "{what}: reservation left: {:?}",
            reservations(&network_dir)
        );
        assert!(
            cache_files(&cni_dir).is_empty(),
            "{what}: cache left: {:?}",
            cache_files(&cni_dir)
        );
        for root in [&data, &cni_dir, &wasm_cache] {
            let leftovers = temporaries(root);
            assert!(
                leftovers.is_empty(),
                "{what}: temporary files left: {leftovers:?}"
            );
        }
    }
    eprintln!(
        "{interrupted} of {KILL_ITERATIONS} ADDs were killed before they finished, {half_done} left something for DEL"
    );
    assert!(half_done >= 1, "no kill left anything for DEL to clean up");
    assert!(
        interrupted >= KILL_ITERATIONS / 4,
        "most ADDs must be interrupted for the test to mean anything: {interrupted}"
    );
}

/// `ip -o monitor all` in a namespace: every netlink event (links,
/// addresses, routes, netconf i.e. forwarding sysctls) while it runs.
struct Monitor<'a> {
    netns: &'a Netns,
    child: Child,
    lines: Receiver<String>,
    probes: u32,
}

/// The monitor's probe addresses: TEST-NET-1, which no plan here uses.
const PROBE: &str = "192.0.2.";

impl<'a> Monitor<'a> {
    fn start(netns: &'a Netns) -> Monitor<'a> {
        let mut child = Command::new("ip")
            .args(["-n", &netns.name, "-o", "monitor", "all"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ip monitor");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut monitor = Monitor {
            netns,
            child,
            lines,
            probes: 0,
        };
        // Listening once our own probe shows up.
        monitor.events();
        monitor
    }

    /// The events since the last call: add and delete a probe address on
    /// `lo` and collect every line until the deletion shows up. A probe the
    /// monitor missed (made before it was listening) is retried.
    fn events(&mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut events = Vec::new();
        loop {
            let probe = format!("{PROBE}{}/32", self.probes % 250 + 1);
            self.probes += 1;
            self.netns.ip(&["addr", "add", &probe, "dev", "lo"]);
            self.netns.ip(&["addr", "del", &probe, "dev", "lo"]);
            let attempt = (Instant::now() + Duration::from_millis(500)).min(deadline);
            loop {
                let left = attempt.saturating_duration_since(Instant::now());
                match self.lines.recv_timeout(left) {
                    Ok(line) => {
                        if line.starts_with("[ADDR]Deleted")
                            && line.contains(&format!("inet {probe}"))
                        {
                            return events;
                        }
                        // Probe lines, including their local routes that
                        // may trail the deletion.
                        if !line.contains(PROBE) {
                            events.push(line);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        panic!("ip monitor exited: {events:?}")
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "ip monitor never reported a probe: {events:?}"
            );
        }
    }
}

impl Drop for Monitor<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until the kernel is done configuring the node's links by itself
/// (IPv6 link-local addresses past duplicate address detection), so that
/// only what a call does shows in the node's netlink events.
fn settle(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let settled = node
            .netns
            .ip_json(&["-6", "addr", "show"])
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|link| link["ifname"] == "ens3" || link["ifname"] == "ens3-peer")
            .filter(|link| {
                link["addr_info"].as_array().is_some_and(|infos| {
                    infos
                        .iter()
                        .any(|info| info["scope"] == "link" && info.get("tentative").is_none())
                })
            })
            .count()
            == 2;
        if settled {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the node's IPv6 link-local addresses never settled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sysctls a hostile plan might aim at, in the pod and in the node.
const POD_SYSCTLS: &[&str] = &[
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/default/forwarding",
    "net/ipv4/conf/lo/forwarding",
    "net/ipv4/conf/eth0/forwarding",
    "net/ipv6/conf/all/forwarding",
];
const NODE_SYSCTLS: &[&str] = &[
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/default/forwarding",
    "net/ipv4/conf/ens3/forwarding",
    "net/ipv6/conf/all/forwarding",
];

fn sysctls(netns: &Netns, keys: &[&str]) -> Vec<(String, String)> {
    keys.iter()
        .map(|key| (key.to_string(), netns.sysctl(key)))
        .collect()
}

fn create(name: &str, master: &str) -> Value {
    json!({"op": "create-macvlan", "name": name, "master": master})
}

fn up(link: &str) -> Value {
    json!({"op": "set-link-up", "link": link})
}

/// Plans refused whole: most start with ops that would succeed (create net1
/// on ens3, bring it up) before the one that breaks a rule, so applying
/// op by op (even with an undo) would show in the pod's netlink events.
///
/// | plan                                               | code |
/// |----------------------------------------------------|------|
/// | set-link-up on lo (down)                           | 107  |
/// | set-link-up on the pod's own eth0 (down)           | 107  |
/// | sysctl net/ipv4/ip_forward                         | 107  |
/// | sysctl net/ipv4/conf/all/forwarding                | 107  |
/// | sysctl net/ipv4/conf/eth0/forwarding               | 107  |
/// | master ens3-peer with allowedMasters ["ens3"]      | 107  |
/// | an op on a 16-byte link name                       | 107  |
/// | create under a 16-byte name, renamed to net1       | 107  |
/// | 100000 ops (huge-plan)                             | 106  |
/// | rename net1 to eth5                                | 107  |
/// | two create-macvlan                                 | 107  |
///
/// Each: the code, the op named, no netlink event in the pod or the node
/// (`ip monitor all`, checked against an accepted plan first), links and
/// sysctls as before, no cache; and the message names the plugin and its
/// sha256, as the README says every sandbox and policy error does.
#[test]
fn hostile_plans_are_refused_whole_with_nothing_applied() {
    let node = Node::new();
    let dir = scratch();
    let cni_dir = dir.path().join("cni");
    let long_name = "abcdefghijklmnop"; // 16 bytes
    assert_eq!(long_name.len(), 16);
    // (case, hostile netconf fields, allowedMasters, code, message part)
    let cases: Vec<(&str, Value, Option<Value>, u64, &str)> = vec![
        (
            "set-link-up on lo",
            json!({"behaviour": "plan", "ops": [create("net1", "ens3"), up("net1"), up("lo")]}),
            None,
            107,
            "op 2 (set-link-up",
        ),
        (
            "set-link-up on the pod's eth0",
            json!({"behaviour": "plan", "ops": [create("net1", "ens3"), up("net1"), up("eth0")]}),
            None,
            107,
            "op 2 (set-link-up",
        ),
        (
            "sysctl net/ipv4/ip_forward",
            json!({"behaviour": "plan", "ops": [
                create("net1", "ens3"), up("net1"),
                {"op": "set-sysctl", "key": "net/ipv4/ip_forward", "value": "1"}
            ]}),
            None,
            107,
            "op 2 (set-sysctl",
        ),
        (
            "sysctl net/ipv4/conf/all/forwarding",
            json!({"behaviour": "plan", "ops": [
                create("net1", "ens3"), up("net1"),
                {"op": "set-sysctl", "key": "net/ipv4/conf/all/forwarding", "value": "1"}
            ]}),
            None,
            107,
            "op 2 (set-sysctl",
        ),
        (
            "sysctl of the pod's eth0",
            json!({"behaviour": "plan", "ops": [
                create("net1", "ens3"), up("net1"),
                {"op": "set-sysctl", "key": "net/ipv4/conf/eth0/forwarding", "value": "1"}
            ]}),
            None,
            107,
            "op 2 (set-sysctl",
        ),
        (
            "master outside allowedMasters",
            json!({"behaviour": "plan", "ops": [create("net1", "ens3-peer"), up("net1")]}),
            Some(json!(["ens3"])),
            107,
            "allowedMasters",
        ),
        (
            "a 16-byte link name",
            json!({"behaviour": "plan", "ops": [
                create("net1", "ens3"), up("net1"),
                {"op": "add-address", "link": long_name, "address": "10.70.0.2/24"}
            ]}),
            None,
            107,
            "op 2 (add-address",
        ),
        (
            "a 16-byte name renamed to the ifname",
            json!({"behaviour": "plan", "ops": [
                create(long_name, "ens3"),
                {"op": "rename-link", "name": long_name, "new_name": "net1"},
                up("net1")
            ]}),
            None,
            107,
            "op 0 (create-macvlan",
        ),
        (
            "100000 ops",
            json!({"behaviour": "huge-plan", "count": 100_000}),
            None,
            106,
            "100000",
        ),
        (
            "a rename to another name than the ifname",
            json!({"behaviour": "plan", "ops": [
                create("net1", "ens3"), up("net1"),
                {"op": "rename-link", "name": "net1", "new_name": "eth5"}
            ]}),
            None,
            107,
            "op 2 (rename-link",
        ),
        (
            "two create-macvlan",
            json!({"behaviour": "plan", "ops": [
                create("net1", "ens3"), up("net1"), create("net1", "ens3")
            ]}),
            None,
            107,
            "only one link",
        ),
    ];
    settle(&node);
    let hostile = support::plugin(test_artifacts::HOSTILE);
    let digest = hostile["sha256"].as_str().expect("sha256").to_string();

    // The control: an accepted plan shows in the pod's events, so an empty
    // list below means nothing was applied, not a deaf monitor.
    {
        let netconf = json!({
            "cniVersion": "1.0.0", "name": "evil", "type": "hostile", "behaviour": "plan",
            "ops": [create("net1", "ens3"), up("net1")]
        });
        // Its own directories: the plan's DEL (the same ops) is refused, so
        // its cache stays there; dropping the pod removes its net1.
        let control_dir = scratch();
        let mut config = delegates_config(control_dir.path(), vec![netconf]);
        config["wasmPlugins"]["hostile"] = hostile.clone();
        let pod = Netns::new("mwr");
        let mut pod_events = Monitor::start(&pod);
        let mut cni = Cni::new(&node, &pod, "control");
        cni.ifname = "net1".into();
        cni.call("ADD", &config).ok();
        let events = pod_events.events();
        assert!(
            events
                .iter()
                .any(|line| line.starts_with("[LINK]") && line.contains("net1")),
            "{events:?}"
        );
    }

    let mut unnamed = Vec::new();
    for (case, fields, allowed_masters, code, part) in cases {
        let mut netconf = json!({"cniVersion": "1.0.0", "name": "evil", "type": "hostile"});
        for (key, value) in fields.as_object().expect("fields") {
            netconf[key] = value.clone();
        }
        let mut config = delegates_config(dir.path(), vec![netconf]);
        config["wasmPlugins"]["hostile"] = hostile.clone();
        if let Some(allowed) = allowed_masters {
            config["allowedMasters"] = allowed;
        }
        // The pod: lo and a veth eth0 (peer0), all down, so any change shows.
        let pod = Netns::new("mwr");
        pod.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ]);
        pod.ip(&["link", "set", "lo", "down"]);
        let pod_before = link_state(&pod);
        let node_before = link_state(&node.netns);
        let pod_sysctls = sysctls(&pod, POD_SYSCTLS);
        let node_sysctls = sysctls(&node.netns, NODE_SYSCTLS);
        let mut pod_events = Monitor::start(&pod);
        let mut node_events = Monitor::start(&node.netns);

        let mut cni = Cni::new(&node, &pod, "evil");
        cni.ifname = "net1".into();
        let output = cni.call("ADD", &config);

        assert_eq!(output.error_code(), code, "{case}: {}", output.stdout);
        let message = output.json()["msg"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains(part), "{case}: {message}");
        // README: every sandbox and policy error names the plugin and its
        // sha256. Checked after the whole corpus, so that every case's
        // "nothing applied" is checked first.
        if !(message.contains("hostile") && message.contains(&digest)) {
            unnamed.push(format!("{case} ({code}): {message}"));
        }
        assert_eq!(
            pod_events.events(),
            Vec::<String>::new(),
            "{case}: the pod saw netlink changes"
        );
        assert_eq!(
            node_events.events(),
            Vec::<String>::new(),
            "{case}: the node saw netlink changes"
        );
        assert_eq!(link_state(&pod), pod_before, "{case}: pod links");
        assert_eq!(link_state(&node.netns), node_before, "{case}: node links");
        assert_eq!(
            sysctls(&pod, POD_SYSCTLS),
            pod_sysctls,
            "{case}: pod sysctls"
        );
        assert_eq!(
            sysctls(&node.netns, NODE_SYSCTLS),
            node_sysctls,
            "{case}: node sysctls"
        );
        assert!(cache_files(&cni_dir).is_empty(), "{case}: cache left");
    }
    assert!(
        unnamed.is_empty(),
        "refusals that do not name the plugin (hostile) and its sha256 {digest}:\n{}",
        unnamed.join("\n")
    );
}

/// One bad input: how the call differs from a good ADD, and the CNI code.
struct BadInput {
    case: &'static str,
    stdin: Option<Vec<u8>>,
    remove: &'static [&'static str],
    set: Vec<(&'static str, String)>,
    /// The pod `default/corpus`'s networks annotation and NADs (name, config).
    pod_networks: Option<&'static str>,
    nads: Vec<(&'static str, String)>,
    code: u64,
    /// Whether the call gets as far as running the first (good) delegate,
    /// which then rolls back: its IPAM directory keeps `lock` and
    /// `last_reserved_ip.0` but no reservation.
    runs_a_delegate: bool,
}

/// The bad-input corpus, each case through the binary (ADD, delegates mode,
/// the seed macvlan as the delegate): exit code 1, the error JSON on stdout
/// with the code below, and nothing changed (pod links, IPAM directory,
/// attachment cache).
///
/// | case                                     | code |
/// |------------------------------------------|------|
/// | malformed JSON                           | 6    |
/// | truncated JSON                           | 6    |
/// | unknown cniVersion "9.9.9"               | 1    |
/// | missing CNI_CONTAINERID                  | 4    |
/// | missing CNI_NETNS on ADD                 | 4    |
/// | CNI_ARGS `justakey`                      | 4    |
/// | CNI_NETNS not a netns (/etc/hostname)    | 4    |
/// | CNI_NETNS that does not exist            | 4    |
/// | annotation `Bad_Name`                    | 7    |
/// | annotation `a/b/c`                       | 7    |
/// | NAD whose spec.config is not JSON        | 6    |
/// | NAD of a type with no plugin or binary   | 7    |
///
/// A missing netns on ADD is 4 (invalid environment: CNI_NETNS names
/// nothing), not 3 (unknown container, which tells the runtime no cleanup
/// is needed): the runtime passed a bad variable, and the meta-plugin
/// cannot know the container.
#[test]
fn bad_input_is_refused_with_its_code_and_changes_nothing() {
    let node = Node::new();
    let dir = scratch();
    let data = dir.path().join("ipam");
    let cni_dir = dir.path().join("cni");
    let manifests = dir.path().join("manifests");
    let config = delegates_config(dir.path(), vec![seed_netconf(&data)]);
    let good = serde_json::to_vec(&config).expect("json");
    let mut version = config.clone();
    version["cniVersion"] = json!("9.9.9");
    let missing_netns = format!("/var/run/netns/{}", unique("mwgone"));
    let pod_args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=corpus;K8S_POD_INFRA_CONTAINER_ID=corpus;K8S_POD_UID=uid-corpus";
    let seed_nad = serde_json::to_string(&seed_netconf(&data)).expect("json");
    let unknown_type = json!({"cniVersion": "1.0.0", "name": "nowhere", "type": "no-such-plugin"});
    let base = |case| BadInput {
        case,
        stdin: None,
        remove: &[],
        set: Vec::new(),
        pod_networks: None,
        nads: Vec::new(),
        code: 0,
        runs_a_delegate: false,
    };
    let cases = vec![
        BadInput {
            stdin: Some(b"{this is not json".to_vec()),
            code: 6,
            ..base("malformed JSON")
        },
        BadInput {
            stdin: Some(good[..good.len() / 2].to_vec()),
            code: 6,
            ..base("truncated JSON")
        },
        BadInput {
            stdin: Some(serde_json::to_vec(&version).expect("json")),
            code: 1,
            ..base("cniVersion 9.9.9")
        },
        BadInput {
            remove: &["CNI_CONTAINERID"],
            code: 4,
            ..base("missing CNI_CONTAINERID")
        },
        BadInput {
            remove: &["CNI_NETNS"],
            code: 4,
            ..base("missing CNI_NETNS")
        },
        BadInput {
            set: vec![("CNI_ARGS", "justakey".into())],
            code: 4,
            ..base("CNI_ARGS justakey")
        },
        BadInput {
            set: vec![("CNI_NETNS", "/etc/hostname".into())],
            code: 4,
            ..base("netns not a netns")
        },
        BadInput {
            set: vec![("CNI_NETNS", missing_netns.clone())],
            code: 4,
            ..base("netns that does not exist")
        },
        BadInput {
            set: vec![("CNI_ARGS", pod_args.into())],
            pod_networks: Some("Bad_Name"),
            nads: vec![("macvlan-conf", seed_nad.clone())],
            code: 7,
            ..base("annotation Bad_Name")
        },
        BadInput {
            set: vec![("CNI_ARGS", pod_args.into())],
            pod_networks: Some("a/b/c"),
            nads: vec![("macvlan-conf", seed_nad.clone())],
            code: 7,
            ..base("annotation a/b/c")
        },
        BadInput {
            set: vec![("CNI_ARGS", pod_args.into())],
            pod_networks: Some("notjson"),
            nads: vec![("notjson", "{\"cniVersion\": \"1.0.0\", \"type\":".into())],
            code: 6,
            ..base("NAD config not JSON")
        },
        BadInput {
            set: vec![("CNI_ARGS", pod_args.into())],
            pod_networks: Some("nowhere"),
            nads: vec![("nowhere", unknown_type.to_string())],
            code: 7,
            runs_a_delegate: true,
            ..base("NAD of an unknown type")
        },
    ];

    let pod = Netns::new("mwr");
    let mut cni = Cni::new(&node, &pod, "corpus");
    cni.ifname = "eth0".into();
    for input in cases {
        let case = input.case;
        std::fs::create_dir_all(&manifests).expect("manifests");
        for entry in files(&manifests) {
            std::fs::remove_file(manifests.join(entry)).expect("clear manifests");
        }
        if let Some(networks) = input.pod_networks {
            let pod_manifest = json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "corpus",
                    "namespace": "default",
                    "uid": "uid-corpus",
                    "annotations": {"k8s.v1.cni.cncf.io/networks": networks}
                }
            });
            std::fs::write(
                manifests.join("corpus.yaml"),
                serde_yaml::to_string(&pod_manifest).expect("yaml"),
            )
            .expect("write the pod");
        }
        for (name, nad_config) in &input.nads {
            let manifest = json!({
                "apiVersion": "k8s.cni.cncf.io/v1",
                "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"config": nad_config}
            });
            std::fs::write(
                manifests.join(format!("{name}.yaml")),
                serde_yaml::to_string(&manifest).expect("yaml"),
            )
            .expect("write the NAD");
        }
        let before = link_state(&pod);
        let set: Vec<(&str, &str)> = input
            .set
            .iter()
            .map(|(key, value)| (*key, value.as_str()))
            .collect();
        let stdin = input.stdin.as_deref().unwrap_or(&good);
        let output = call_with_env(&cni, "ADD", stdin, input.remove, &set);

        assert_eq!(
            output.code, 1,
            "{case}: exit code (stdout {}, stderr {})",
            output.stdout, output.stderr
        );
        let error: Value = serde_json::from_str(&output.stdout)
            .unwrap_or_else(|err| panic!("{case}: stdout is not JSON ({err}): {}", output.stdout));
        assert_eq!(error["code"], input.code, "{case}: {error}");
        assert!(
            error["msg"].as_str().is_some_and(|msg| !msg.is_empty()),
            "{case}: {error}"
        );
        assert_eq!(link_state(&pod), before, "{case}: pod links changed");
        assert_node_links(&node, case);
        assert!(
            cache_files(&cni_dir).is_empty(),
            "{case}: cache left: {:?}",
            cache_files(&cni_dir)
        );
        let network_dir = data.join("macvlan-conf");
        if input.runs_a_delegate {
            assert!(
                network_dir.join("last_reserved_ip.0").exists(),
                "{case}: the first delegate should have run"
            );
            assert!(
                reservations(&network_dir).is_empty(),
                "{case}: {:?}",
                reservations(&network_dir)
            );
        } else {
            assert!(
                files(&data).is_empty(),
                "{case}: the IPAM directory was touched: {:?}",
                files(&network_dir)
            );
        }
    }
    assert!(!Path::new(&missing_netns).exists());
}
