//! Container networking end to end: a real berthd driving Debian's CNI
//! plugins, operated through the real berthctl. Each test runs itself again
//! inside `unshare --net --mount` (tests/src/netns.rs), so the bridges,
//! addresses and iptables rules never touch the host's network; its berthd,
//! shims and containers live in that namespace too. Needs root, the
//! plugins, unshare and iptables; says SKIPPED otherwise (fails under
//! BERTH_REQUIRE_PEERS=1).
//!
//! What is checked: user networks and the default one; container to
//! container by IP and by name, and not across networks; a container on two
//! networks; a published port answered at the bridge's gateway address;
//! `--net none` and `--net host`; /etc/resolv.conf, /etc/hosts and the
//! hostname; a taken host port refused leaving nothing behind; SIGKILL of
//! berthd with networked containers running, restart; and after 50
//! networked `run --rm` plus a crash cycle, no IP reservation, netns mount,
//! veth or iptables rule left (the counts are printed: `leak counts:`); an
//! `always` container published again after a host reboot.

use berth_tests::netns::*;
use berth_tests::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Output;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tests start a daemon each; one at a time keeps the 2-core CI box
/// (and the timeouts below) honest.
static SERIAL: Mutex<()> = Mutex::new(());

/// True when the caller is the re-executed process and should run the
/// test's body; otherwise runs it (or skips) and answers false.
fn body_here(name: &str) -> bool {
    if in_private_network() {
        return true;
    }
    if let Some(why) = network_prerequisites() {
        skip(&why);
        return false;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    run_test_in_private_network(name);
    false
}

/// A berthd with the host's CNI plugins, its networks in a temp dir, and
/// busybox imported into containerd namespace `ns`.
struct Net {
    d: Daemon,
    ns: &'static str,
    _conf: tempfile::TempDir,
    /// After the daemon (fields drop in order): the namespace's cgroup
    /// level, which the runtime leaves.
    _cgroups: CgroupLevel,
}

struct CgroupLevel(&'static str);

impl Drop for CgroupLevel {
    fn drop(&mut self) {
        remove_cgroups(&format!("/{}", self.0));
    }
}

impl Net {
    fn start(ns: &'static str) -> Net {
        // Nothing but lo: the re-exec put us in a namespace of our own.
        assert_eq!(links(), ["lo"], "not in a fresh network namespace");
        let conf = tempfile::tempdir().expect("tempdir");
        let d = Daemon::start_with_config(&network_config(&conf.path().join("net.d")));
        let n = Net {
            d,
            ns,
            _conf: conf,
            _cgroups: CgroupLevel(ns),
        };
        let img = fixtures().join("busybox-docker.tar");
        n.ok(&["images", "import", img.to_str().expect("utf-8")]);
        n
    }

    fn state(&self) -> PathBuf {
        self.d.state()
    }

    fn ipam(&self) -> PathBuf {
        self.state().join("cni/networks")
    }

    /// berthctl with exactly `args` (no `--net none` added).
    fn ctl(&self, args: &[&str]) -> Output {
        berthctl_at_default_net(&self.d.sock, self.d.dir.path(), self.ns, args)
            .output()
            .expect("run berthctl")
    }

    fn ok(&self, args: &[&str]) -> String {
        ok(&format!("berthctl {}", args.join(" ")), self.ctl(args))
    }

    /// Asserts `args` fail; the error output.
    fn fails(&self, args: &[&str]) -> String {
        fails(&format!("berthctl {}", args.join(" ")), self.ctl(args))
    }

    /// `run --rm ARGS`, which must succeed; its output.
    fn run(&self, args: &[&str]) -> String {
        let mut v = vec!["run", "--rm"];
        v.extend_from_slice(args);
        self.ok(&v)
    }

    /// A detached busybox httpd named `name` serving `body` at /, with
    /// the extra `run` options `opts`.
    fn serve(&self, name: &str, opts: &[&str], body: &str) {
        let script = format!(
            "mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www"
        );
        let mut v = vec!["run", "-d", "--name", name];
        v.extend_from_slice(opts);
        v.extend_from_slice(&["busybox", "sh", "-c", &script]);
        assert_eq!(self.ok(&v).trim(), name);
    }

    fn containers(&self) -> Vec<String> {
        self.ok(&["containers", "ls", "-q"])
            .lines()
            .map(String::from)
            .collect()
    }

    /// What a refused `run` must not leave: containers, snapshots,
    /// leases, and the network leftovers.
    fn objects(&self) -> (String, String, String, LeakCounts) {
        (
            self.ok(&["containers", "ls", "-q"]),
            self.ok(&["snapshots", "ls"]),
            self.ok(&["leases", "ls", "-q"]),
            LeakCounts::now(&self.state()),
        )
    }

    /// Removes the tasks (killing running ones) and containers `ids`.
    fn remove(&self, ids: &[&str]) {
        let tasks = self.ok(&["tasks", "ls", "-q"]);
        for id in ids {
            if tasks.lines().any(|t| t == *id) {
                self.ok(&["tasks", "rm", "-f", id]);
            }
            self.ok(&["containers", "rm", id]);
        }
    }

    /// The IPv4 address of `ifname` in running container `id`.
    fn ip_of(&self, id: &str, ifname: &str) -> Ipv4Addr {
        let out = self.ok(&[
            "tasks", "exec", id, "ip", "-o", "-4", "addr", "show", "dev", ifname,
        ]);
        inet(&out).unwrap_or_else(|| panic!("no IPv4 address on {id}'s {ifname}: {out}"))
    }

    fn labels(&self, id: &str) -> serde_json::Value {
        let info: serde_json::Value =
            serde_json::from_str(&self.ok(&["containers", "info", id])).expect("info json");
        info["labels"].clone()
    }

    fn netns_file(&self, id: &str) -> PathBuf {
        self.state().join("netns").join(self.ns).join(id)
    }
}

/// The address of the first `inet A/LEN` in `ip -o -4 addr` output.
fn inet(out: &str) -> Option<Ipv4Addr> {
    let mut toks = out.split_whitespace();
    toks.find(|t| *t == "inet")?;
    toks.next()?.split('/').next()?.parse().ok()
}

fn in_subnet(ip: Ipv4Addr, net: [u8; 3]) -> bool {
    ip.octets()[..3] == net
}

/// A shell loop asking `host` for / over HTTP with busybox nc until it
/// answers (the server may still be starting), printing the response;
/// fails after ~10s. Not wget: busybox-static's wget (glibc getaddrinfo)
/// crashes resolving any name in an image without glibc's NSS modules,
/// while nc and ping resolve through /etc/hosts fine.
fn fetch(host: &str) -> String {
    format!(
        "i=0; while [ $i -lt 40 ]; do \
         r=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} 80) && [ -n \"$r\" ] && {{ echo \"$r\"; exit 0; }}; \
         i=$((i+1)); sleep 0.25; done; exit 1"
    )
}

/// The body of an HTTP response `fetch` printed, asserting a 200.
fn http_body(resp: &str) -> &str {
    assert!(
        resp.starts_with("HTTP/1.") && resp.split(' ').nth(1) == Some("200"),
        "{resp}"
    );
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim()
}

/// The `nameserver` addresses of a resolv.conf.
fn nameservers(conf: &str) -> Vec<String> {
    conf.lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(|s| s.trim().to_string())
        .collect()
}

/// Waits up to 10s for `cond`.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn gateway(a: [u8; 3]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], 1))
}

const NET_A: [u8; 3] = [10, 201, 0];
const NET_B: [u8; 3] = [10, 202, 0];
const NET_R: [u8; 3] = [10, 203, 0];
const DEFAULT_NET: [u8; 3] = [10, 88, 0];

#[test]
fn networking_end_to_end() {
    if !body_here("networking_end_to_end") {
        return;
    }
    let started = Instant::now();
    let n = Net::start("nete2e");
    let baseline = LeakCounts::now(&n.state());
    assert!(baseline.none(), "before any container: {baseline}");

    // Two user networks besides the default one.
    n.ok(&["network", "create", "a", "--subnet", "10.201.0.0/24"]);
    n.ok(&["network", "create", "b", "--subnet", "10.202.0.0/24"]);
    let ls = n.ok(&["network", "ls", "-q"]);
    let mut names: Vec<&str> = ls.lines().collect();
    names.sort();
    assert_eq!(names, ["a", "b", "bridge"], "{ls}");

    // Container to container on network a, by name and by IP.
    n.serve("srv", &["--net", "a"], "hello-srv");
    let srv_ip = n.ip_of("srv", "eth0");
    assert!(in_subnet(srv_ip, NET_A), "srv got {srv_ip}");
    assert_eq!(
        reserved_ips(&n.ipam(), "a"),
        [IpAddr::V4(srv_ip)],
        "host-local's reservation for srv"
    );
    let labels = n.labels("srv");
    assert_eq!(labels["berth.networks"], "a", "{labels}");
    assert!(n.netns_file("srv").exists());
    let by_name = n.run(&["--net", "a", "busybox", "sh", "-c", &fetch("srv")]);
    assert_eq!(http_body(&by_name), "hello-srv");
    let by_ip = n.run(&[
        "--net",
        "a",
        "busybox",
        "sh",
        "-c",
        &fetch(&srv_ip.to_string()),
    ]);
    assert_eq!(http_body(&by_ip), "hello-srv");

    // /etc/hosts is kept current: a container joining a shows up in srv's,
    // srv in the newcomer's, and the newcomer goes when it is removed.
    n.ok(&[
        "run", "-d", "--name", "peer", "--net", "a", "busybox", "sleep", "600",
    ]);
    let peer_ip = n.ip_of("peer", "eth0");
    let hosts_has = |id: &str, ip: Ipv4Addr, name: &str| {
        n.ok(&["tasks", "exec", id, "cat", "/etc/hosts"])
            .lines()
            .any(|l| {
                let mut t = l.split_whitespace();
                t.next() == Some(&ip.to_string()) && t.any(|w| w == name)
            })
    };
    eventually("peer in srv's /etc/hosts", || {
        hosts_has("srv", peer_ip, "peer")
    });
    assert!(hosts_has("peer", srv_ip, "srv"));
    n.remove(&["peer"]);
    eventually("peer gone from srv's /etc/hosts", || {
        !hosts_has("srv", peer_ip, "peer")
    });

    // Network b is another bridge: srv is neither known by name nor
    // reachable by address from there.
    let hosts_b = n.run(&["--net", "b", "busybox", "cat", "/etc/hosts"]);
    assert!(!hosts_b.split_whitespace().any(|w| w == "srv"), "{hosts_b}");
    let probe = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {srv_ip} 80");
    let err = n.fails(&["run", "--rm", "--net", "b", "busybox", "sh", "-c", &probe]);
    eprintln!("network b -> srv by IP (must fail): {}", err.trim());

    // On both networks: eth0 on a, eth1 on b, in the order given.
    let out = n.run(&[
        "--net",
        "a",
        "--net",
        "b",
        "busybox",
        "sh",
        "-c",
        "ls /sys/class/net; echo ---; ip -o -4 addr show dev eth0; ip -o -4 addr show dev eth1",
    ]);
    let (ifs, addrs) = out.split_once("---").expect("separator");
    let mut ifs: Vec<&str> = ifs.split_whitespace().collect();
    ifs.sort();
    assert_eq!(ifs, ["eth0", "eth1", "lo"], "{out}");
    let mut lines = addrs.trim().lines();
    let eth0 = inet(lines.next().unwrap_or("")).expect("eth0 address");
    let eth1 = inet(lines.next().unwrap_or("")).expect("eth1 address");
    assert!(
        in_subnet(eth0, NET_A) && in_subnet(eth1, NET_B),
        "eth0 {eth0}, eth1 {eth1}"
    );

    // A published port on the default network (no --net given), answered
    // at the bridge's gateway address from this (the "host") namespace.
    n.serve("web", &["-p", "8080:80"], "hello-web");
    let web_ip = n.ip_of("web", "eth0");
    assert!(in_subnet(web_ip, DEFAULT_NET), "web got {web_ip}");
    let labels = n.labels("web");
    assert_eq!(labels["berth.networks"], "bridge", "{labels}");
    assert_eq!(labels["berth.ports"], "8080:80/tcp", "{labels}");
    let published = SocketAddr::new(gateway(DEFAULT_NET), 8080);
    let body = http_get(published, "/", Duration::from_secs(10)).expect("published port");
    assert_eq!(body.trim(), "hello-web");
    assert!(links().iter().any(|l| l == "berth0"), "{:?}", links());

    // --net none: only lo, and it is up.
    let out = n.run(&[
        "--net",
        "none",
        "busybox",
        "sh",
        "-c",
        "ls /sys/class/net; cat /sys/class/net/lo/flags",
    ]);
    let toks: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(toks.len(), 2, "{out}");
    assert_eq!(toks[0], "lo", "{out}");
    let flags = u32::from_str_radix(toks[1].trim_start_matches("0x"), 16).expect("flags");
    assert_eq!(flags & 1, 1, "lo is not up (IFF_UP): {out}");
    let ip_link = n.run(&["--net", "none", "busybox", "ip", "-o", "link"]);
    assert_eq!(ip_link.lines().count(), 1, "{ip_link}");
    assert!(
        ip_link.contains("lo:") && ip_link.contains("UP"),
        "{ip_link}"
    );

    // --net host: this namespace's links, and the host's resolv.conf.
    let out = n.run(&["--net", "host", "busybox", "ls", "/sys/class/net"]);
    let mut seen: Vec<&str> = out.split_whitespace().collect();
    seen.sort();
    assert_eq!(seen, links(), "--net host sees other links");
    let conf = n.run(&["--net", "host", "busybox", "cat", "/etc/resolv.conf"]);
    assert_eq!(
        conf,
        std::fs::read_to_string("/etc/resolv.conf").expect("host resolv.conf")
    );

    // resolv.conf: the host's servers minus loopback ones; --dns wins.
    let host_servers: Vec<String> =
        nameservers(&std::fs::read_to_string("/etc/resolv.conf").expect("host resolv.conf"))
            .into_iter()
            .filter(|s| !s.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()))
            .collect();
    let conf = n.run(&["busybox", "cat", "/etc/resolv.conf"]);
    let servers = nameservers(&conf);
    assert!(
        servers
            .iter()
            .all(|s| !s.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())),
        "loopback server: {conf}"
    );
    if !host_servers.is_empty() {
        assert_eq!(servers, host_servers, "{conf}");
    }
    let conf = n.run(&[
        "--dns",
        "1.2.3.4",
        "--dns",
        "5.6.7.8",
        "busybox",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert_eq!(nameservers(&conf), ["1.2.3.4", "5.6.7.8"], "{conf}");
    // The files are berthd's, mounted read-only.
    let err = n.fails(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo 9.9.9.9 >> /etc/resolv.conf",
    ]);
    assert!(err.contains("Read-only file system"), "{err}");

    // --hostname and --add-host; the hostname defaults to the name.
    let out = n.run(&[
        "--name",
        "hn1",
        "--hostname",
        "myhost",
        "--add-host",
        "db.local:10.9.8.7",
        "--add-host",
        "cache:10.9.8.8",
        "busybox",
        "sh",
        "-c",
        "hostname; cat /etc/hostname; echo ---; cat /etc/hosts; echo ---; \
         ping -c 1 -W 1 db.local 2>&1 | head -n 1; ip -o -4 addr show dev eth0",
    ]);
    let parts: Vec<&str> = out.split("---").collect();
    assert_eq!(parts.len(), 3, "{out}");
    assert_eq!(
        parts[0].split_whitespace().collect::<Vec<_>>(),
        ["myhost", "myhost"]
    );
    let hosts = parts[1];
    let has_line = |ip: &str, names: &[&str]| {
        hosts.lines().any(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            t.first() == Some(&ip) && names.iter().all(|n| t.contains(n))
        })
    };
    assert!(has_line("127.0.0.1", &["localhost"]), "{hosts}");
    assert!(has_line("10.9.8.7", &["db.local"]), "{hosts}");
    assert!(has_line("10.9.8.8", &["cache"]), "{hosts}");
    let own = inet(parts[2]).expect("hn1's address");
    assert!(has_line(&own.to_string(), &["myhost", "hn1"]), "{hosts}");
    assert!(parts[2].contains("PING db.local (10.9.8.7)"), "{out}");
    assert_eq!(
        n.run(&["--name", "hn2", "busybox", "hostname"]).trim(),
        "hn2"
    );

    // A taken host port: published by web (also from another network),
    // or held by a socket of the host's. Refused naming the port, and
    // nothing is left: no container, netns file or IP reservation.
    let before = n.objects();
    for (id, net) in [("taken1", "bridge"), ("taken2", "a")] {
        let out = n.ctl(&[
            "run", "--rm", "--name", id, "--net", net, "-p", "8080:80", "busybox", "true",
        ]);
        assert_ne!(out.status.code(), Some(0));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("8080"), "{id}: {err}");
        assert!(err.contains("web"), "{id}: the holder is not named: {err}");
        eprintln!("taken port ({id}): {}", err.trim());
        assert!(!n.netns_file(id).exists(), "{id}'s netns is left");
    }
    let held = std::net::TcpListener::bind("0.0.0.0:8181").expect("hold 8181");
    let err = n.fails(&[
        "run", "--rm", "--name", "taken3", "-p", "8181:80", "busybox", "true",
    ]);
    assert!(err.contains("8181"), "{err}");
    eprintln!("port held by a host socket: {}", err.trim());
    let after = n.objects();
    assert_eq!(after, before, "a refused run left something");
    drop(held);
    n.run(&["--name", "free", "-p", "8181:80", "busybox", "true"]);
    // The published port still answers: the refusals left web alone.
    let body = http_get(published, "/", Duration::from_secs(5)).expect("published port");
    assert_eq!(body.trim(), "hello-web");

    // SIGKILL berthd with srv and web running; after the restart the port
    // still answers and srv is still reachable by name.
    let running = LeakCounts::now(&n.state());
    eprintln!("running srv and web: {running}");
    assert_eq!(
        (
            running.ips,
            running.netns_mounts,
            running.netns_files,
            running.veths
        ),
        (2, 2, 2, 2),
        "{running}"
    );
    assert!(running.iptables_rules > 0, "no rule names the containers");
    let mut n = n;
    n.d.kill9();
    n.d.restart();
    let body = http_get(published, "/", Duration::from_secs(10)).expect("port after restart");
    assert_eq!(body.trim(), "hello-web");
    let by_name = n.run(&["--net", "a", "busybox", "sh", "-c", &fetch("srv")]);
    assert_eq!(http_body(&by_name), "hello-srv");
    assert_eq!(
        LeakCounts::now(&n.state()),
        running,
        "the restart changed the attachments"
    );

    // Everything removed: nothing left, networks removable.
    n.remove(&["srv", "web"]);
    assert!(n.containers().is_empty(), "{:?}", n.containers());
    let left = LeakCounts::now(&n.state());
    eprintln!("end-to-end test, after removing everything: leak counts: {left}");
    assert!(left.none(), "left behind: {left}");
    assert_eq!(reservations(&n.ipam()), 0);
    assert!(
        links().iter().all(|l| !l.starts_with("veth")),
        "{:?}",
        links()
    );
    n.ok(&["network", "rm", "a", "b"]);
    eprintln!("networking_end_to_end took {:.1?}", started.elapsed());
}

#[test]
fn a_networked_always_container_comes_back_after_a_host_reboot() {
    if !body_here("a_networked_always_container_comes_back_after_a_host_reboot") {
        return;
    }
    let mut n = Net::start("netboot");
    n.ok(&["network", "create", "r", "--subnet", "10.203.0.0/24"]);
    n.serve(
        "web",
        &["--net", "r", "-p", "8080:80", "--restart", "always"],
        "hello-boot",
    );
    let published = SocketAddr::new(gateway(NET_R), 8080);
    let body = http_get(published, "/", Duration::from_secs(10)).expect("published port");
    assert_eq!(body.trim(), "hello-boot");
    // A reboot also ends the kernel's network state: the bridge, veths and
    // iptables rules (of this private namespace) go too.
    n.d.reboot_with(|| {
        for l in links().into_iter().filter(|l| l != "lo") {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &l])
                .status();
        }
        for tool in ["iptables", "ip6tables"] {
            for table in ["filter", "nat", "mangle", "raw"] {
                for op in ["-F", "-X"] {
                    ok(
                        &format!("{tool} -t {table} {op}"),
                        std::process::Command::new(tool)
                            .args(["-t", table, op])
                            .output()
                            .expect("run iptables"),
                    );
                }
            }
        }
    });
    let body = http_get(published, "/", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("published port after the reboot: {e}\n{}", n.d.log()));
    assert_eq!(body.trim(), "hello-boot");
    let ip = n.ip_of("web", "eth0");
    assert!(in_subnet(ip, NET_R), "web got {ip}");
    assert_eq!(reserved_ips(&n.ipam(), "r"), [IpAddr::V4(ip)]);
    // Stopped by the user first: a bare task removal is an exit the
    // restart policy would answer.
    n.ok(&["stop", "-t", "1", "web"]);
    n.remove(&["web"]);
    let left = LeakCounts::now(&n.state());
    let rules: Vec<String> = iptables_lines()
        .into_iter()
        .filter(|l| container_rule(l))
        .collect();
    assert!(left.none(), "left behind: {left}: {rules:?}\n{}", n.d.log());
    n.ok(&["network", "rm", "r"]);
}

/// Finds the shim serving container `id` of the daemon at `sock`.
fn shim_pid(sock: &std::path::Path, id: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let has = |k: &str, v: &[u8]| args.windows(2).any(|w| w[0] == k.as_bytes() && w[1] == v);
        let is_shim = args.first()?.ends_with(b"containerd-shim-berth-v2");
        let ours =
            has("-address", sock.as_os_str().as_encoded_bytes()) && has("-id", id.as_bytes());
        (is_shim && ours).then_some(pid)
    })
}

#[test]
fn no_leaks_after_many_runs_and_a_crash() {
    if !body_here("no_leaks_after_many_runs_and_a_crash") {
        return;
    }
    let started = Instant::now();
    let n = Net::start("netleak");
    n.ok(&["network", "create", "a", "--subnet", "10.203.0.0/24"]);

    // 50 networked `run --rm`, each publishing a port, four at a time:
    // half on the default network (no --net), half on a and the default
    // one (ports on the first).
    const RUNS: usize = 50;
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= RUNS {
                        break;
                    }
                    let name = format!("leak{i}");
                    let port = format!("{}:80", 9000 + i);
                    let mut args = vec!["run", "--rm", "--name", &name, "-p", &port];
                    if i % 2 == 1 {
                        args.extend_from_slice(&["--net", "a", "--net", "bridge"]);
                    }
                    args.extend_from_slice(&[
                        "busybox", "ip", "-o", "-4", "addr", "show", "dev", "eth0",
                    ]);
                    let out = n.ok(&args);
                    assert!(inet(&out).is_some(), "{name} had no address: {out}");
                }
            });
        }
    });
    let after_runs = LeakCounts::now(&n.state());
    eprintln!(
        "after {RUNS} networked run --rm ({:.1?}): leak counts: {after_runs}",
        started.elapsed()
    );
    assert!(after_runs.none(), "left behind: {after_runs}");

    // A crash cycle: two servers, one task that exits and one shim that is
    // killed while berthd is down.
    n.serve("keep1", &["-p", "9101:80"], "keep1");
    n.serve(
        "keep2",
        &["--net", "a", "--net", "bridge", "-p", "9102:80"],
        "keep2",
    );
    n.ok(&[
        "run", "-d", "--name", "dier", "-p", "9103:80", "busybox", "sh", "-c", "sleep 2",
    ]);
    n.ok(&[
        "run", "-d", "--name", "gone", "-p", "9104:80", "busybox", "sleep", "600",
    ]);
    let keep1 = SocketAddr::new(gateway(DEFAULT_NET), 9101);
    // keep2 publishes on its first network, a: reachable at any local
    // address, its gateway included.
    let keep2 = SocketAddr::new(gateway([10, 203, 0]), 9102);
    assert_eq!(
        http_get(keep1, "/", Duration::from_secs(10))
            .expect("keep1")
            .trim(),
        "keep1"
    );
    assert_eq!(
        http_get(keep2, "/", Duration::from_secs(10))
            .expect("keep2")
            .trim(),
        "keep2"
    );
    let running = LeakCounts::now(&n.state());
    eprintln!("4 running: {running}");
    assert_eq!(
        (running.ips, running.netns_mounts, running.veths),
        (5, 4, 5),
        "{running}"
    );
    let tasks: serde_json::Value =
        serde_json::from_str(&n.ok(&["--format", "json", "tasks", "ls"])).expect("tasks json");
    let gone_pid: i32 = tasks
        .as_array()
        .expect("list")
        .iter()
        .find(|t| t["id"] == "gone")
        .and_then(|t| i32::try_from(t["pid"].as_i64()?).ok())
        .expect("gone's pid");
    let gone_shim = shim_pid(&n.d.sock, "gone").expect("gone's shim");

    let mut n = n;
    n.d.kill9();
    // SAFETY: kill(2) on processes this test's daemon started.
    unsafe {
        libc::kill(gone_pid, libc::SIGKILL);
        libc::kill(gone_shim, libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_millis(2500)); // dier exits meanwhile
    n.d.restart();
    assert_eq!(
        http_get(keep1, "/", Duration::from_secs(10))
            .expect("keep1 after restart")
            .trim(),
        "keep1"
    );
    assert_eq!(
        http_get(keep2, "/", Duration::from_secs(10))
            .expect("keep2 after restart")
            .trim(),
        "keep2"
    );
    // gone's shim died while berthd was down: its network is torn down at
    // restart, so its port is free again.
    eventually("gone's netns removed after the restart", || {
        !n.netns_file("gone").exists()
    });
    n.run(&["-p", "9104:80", "busybox", "true"]);

    let tasks = n.ok(&["tasks", "ls", "-q"]);
    for id in tasks.lines() {
        n.ok(&["tasks", "rm", "-f", id]);
    }
    let all = n.containers();
    for id in &all {
        n.ok(&["containers", "rm", id]);
    }
    assert!(n.containers().is_empty());
    let left = LeakCounts::now(&n.state());
    eprintln!(
        "after {RUNS} networked run --rm and a SIGKILL/restart cycle, everything removed: leak counts: {left}"
    );
    assert!(left.none(), "left behind: {left}");
    eprintln!(
        "no_leaks_after_many_runs_and_a_crash took {:.1?}",
        started.elapsed()
    );
}
