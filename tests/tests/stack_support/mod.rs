//! The whole stack, as `make up` starts it, in a compose project of the tests' own.
//!
//! [`Stack::up`] runs the repository's docker-compose.yml under the project name
//! `foobar-stacktest` (testcontainers' compose support starts it and takes it down), with its
//! own published ports, its own `edge` subnet (10.153.54.0/24,
//! so it can run beside a user's `make up`) and a copy of `config/` whose zone file names the
//! balancers by their addresses on that subnet. Everything else is what a user runs: the
//! images `make images` built, the secrets in `secrets/`, the healthchecks. Dropping the
//! stack takes it down with its volumes; a stack left behind by a killed run is taken down
//! before the next one starts.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use foobar_demo::compose::{Compose, ServiceState};
use foobar_demo::resolve::Resolver;
use foobar_demo::runtime::Runtime;
use foobar_demo::visitor::VisitorConfig;
use serde::Deserialize;
use testcontainers::compose::DockerCompose;

/// The compose project of the stack tests.
pub const PROJECT: &str = "foobar-stacktest";
/// The first three octets of the tests' `edge` subnet; `make up` uses 10.153.53.
pub const EDGE_NET: &str = "10.153.54";
/// The site's name, in DNS and in the balancers' certificate.
pub const SITE: &str = "www.foobar.com";

/// A running stack of the repository's compose file.
pub struct Stack {
    pub repo: PathBuf,
    /// Holds the env file, the config copy and the balancers' CA while the stack runs.
    _dir: tempfile::TempDir,
    pub env_file: PathBuf,
    /// The published ports of dns-1 and dns-2 (udp and tcp), on 127.0.0.1.
    pub dns_ports: [u16; 2],
    pub ca_file: PathBuf,
    /// How long `up` took to reach all-healthy.
    pub up_time: Duration,
    /// testcontainers' handle on the project: `up` with `--wait`; on drop, `down --volumes`.
    compose: Option<DockerCompose>,
}

impl Stack {
    /// Starts the stack and waits until every service is healthy; prints what it does.
    pub async fn up() -> anyhow::Result<Self> {
        let repo = repo_root();
        let dir = tempfile::Builder::new()
            .prefix("foobar-stacktest")
            .tempdir()?;
        let config = dir.path().join("config");
        copy_config(&repo.join("config"), &config)?;
        // The containers run as their own users: the copy must be readable by them.
        make_readable(dir.path())?;

        let dns_ports = [free_port()?, free_port()?];
        // The compose file's variables: for testcontainers' `up`, and as an env file for the
        // compose commands a test runs itself (which is also how they name the project).
        let mut env: BTreeMap<String, String> = [
            ("COMPOSE_PROJECT_NAME", PROJECT.to_owned()),
            ("FOOBAR_EDGE_NET", EDGE_NET.to_owned()),
            ("FOOBAR_CONFIG_DIR", config.display().to_string()),
            ("DNS_PORT", dns_ports[0].to_string()),
            ("DNS2_PORT", dns_ports[1].to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for key in [
            "LB1_HTTP_PORT",
            "LB1_HTTPS_PORT",
            "LB1_ADMIN_PORT",
            "LB2_HTTP_PORT",
            "LB2_HTTPS_PORT",
            "LB2_ADMIN_PORT",
        ] {
            env.insert(key.to_owned(), free_port()?.to_string());
        }
        let env_file = dir.path().join("stack.env");
        let lines: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(&env_file, lines)?;

        let ca_file = dir.path().join("ca.pem");
        let mut stack = Self {
            repo,
            _dir: dir,
            env_file,
            dns_ports,
            ca_file,
            up_time: Duration::ZERO,
            compose: None,
        };
        // A stack a killed test run left behind (same project, same subnet).
        stack
            .compose(&["down", "--volumes", "--timeout", "0"])
            .await?;
        progress(
            "docker compose up --wait (testcontainers; the stack's images, a project of its own)",
        );
        let started = Instant::now();
        let mut compose =
            DockerCompose::with_local_client(&[stack.repo.join("docker-compose.yml")])
                .with_project_name(PROJECT)
                .with_env_vars(env.into_iter().collect());
        // testcontainers waits up to 60 s for every healthcheck; the stack needs about 20 s
        // from built images on two cores, its databases' first start included.
        let up = compose.up().await;
        // Kept whatever happened, so the stack is taken down with the test.
        stack.compose = Some(compose);
        if let Err(error) = up {
            let ps = stack.compose(&["ps", "--all"]).await?;
            bail!(
                "docker compose up: {error}\n{}",
                String::from_utf8_lossy(&ps.stdout)
            );
        }
        stack.up_time = started.elapsed();
        progress(&format!(
            "all healthy after {:.1} s",
            stack.up_time.as_secs_f64()
        ));
        let ca = stack.ca_file.display().to_string();
        stack
            .compose_ok(&["cp", "lb-1:/var/lib/foobar/tls/ca.pem", &ca])
            .await?;
        Ok(stack)
    }

    /// The compose file's folder and this stack's env file, as the demo's `Compose` takes them.
    pub fn compose_handle(&self) -> Compose {
        Compose::new(
            self.repo.clone(),
            Some(self.repo.join("docker-compose.yml")),
            Some(self.env_file.clone()),
        )
    }

    /// `docker compose` on this stack, its output whatever the exit status.
    pub async fn compose(&self, args: &[&str]) -> anyhow::Result<Output> {
        tokio::process::Command::new("docker")
            .arg("compose")
            .arg("--env-file")
            .arg(&self.env_file)
            .arg("--file")
            .arg(self.repo.join("docker-compose.yml"))
            .args(args)
            .current_dir(&self.repo)
            .stdin(Stdio::null())
            .output()
            .await
            .context("could not run docker compose")
    }

    /// `docker compose`, failing with its stderr unless it exits 0; its stdout.
    pub async fn compose_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.compose(args).await?;
        ensure!(
            output.status.success(),
            "docker compose {}: {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// A bash script in a fresh `client` container (the visitor's machine on `edge`,
    /// resolving through dns-1 and dns-2); its stdout.
    pub async fn client(&self, script: &str) -> anyhow::Result<String> {
        self.compose_ok(&[
            "run",
            "--rm",
            "-T",
            "--no-deps",
            "client",
            "bash",
            "-c",
            script,
        ])
        .await
    }

    /// A bash script in the client image, but inside `service`'s network namespace: what
    /// that service's container can reach.
    pub async fn run_inside(&self, service: &str, script: &str) -> anyhow::Result<String> {
        let id = self.container_id(service).await?;
        let output = tokio::process::Command::new("docker")
            .args(["run", "--rm", "--network"])
            .arg(format!("container:{id}"))
            .args(["foobar/client:dev", "bash", "-c", script])
            .stdin(Stdio::null())
            .output()
            .await?;
        ensure!(
            output.status.success(),
            "script in {service}'s network: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    pub async fn container_id(&self, service: &str) -> anyhow::Result<String> {
        let id = self.compose_ok(&["ps", "--quiet", service]).await?;
        let id = id.trim();
        ensure!(!id.is_empty(), "{service} has no container");
        Ok(id.to_owned())
    }

    /// Every address `service`'s container has, on every network it is on.
    pub async fn addresses(&self, service: &str) -> anyhow::Result<Vec<IpAddr>> {
        let id = self.container_id(service).await?;
        let output = tokio::process::Command::new("docker")
            .args([
                "inspect",
                "--format",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                &id,
            ])
            .output()
            .await?;
        ensure!(output.status.success(), "docker inspect {service} failed");
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .map(|a| a.parse().with_context(|| format!("{service}: address {a}")))
            .collect()
    }

    /// Each container's state and published ports.
    pub async fn ps(&self) -> anyhow::Result<Vec<Container>> {
        let text = self
            .compose_ok(&["ps", "--all", "--format", "json"])
            .await?;
        let text = text.trim();
        if text.starts_with('[') {
            return Ok(serde_json::from_str(text)?);
        }
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("docker compose ps: {l}")))
            .collect()
    }

    /// The answer for www.foobar.com that dns-1 and dns-2 both give, each asked directly;
    /// an error when they differ (each health-checks the balancers on its own).
    pub async fn www_addresses(&self) -> anyhow::Result<Vec<IpAddr>> {
        let mut answers = Vec::new();
        for server in self.dns_servers() {
            let mut addresses = Resolver::new(&[server], SITE, Duration::from_secs(2))?
                .lookup()
                .await?;
            addresses.sort();
            answers.push(addresses);
        }
        ensure!(
            answers[0] == answers[1],
            "dns-1 answers {:?}, dns-2 {:?}",
            answers[0],
            answers[1]
        );
        Ok(answers.swap_remove(0))
    }

    /// dns-1 and dns-2 as the host reaches them (their published ports).
    pub fn dns_servers(&self) -> Vec<SocketAddr> {
        self.dns_ports
            .iter()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], *port)))
            .collect()
    }

    /// Waits until every long-running service is healthy again.
    pub async fn wait_healthy(&self, within: Duration) -> anyhow::Result<Duration> {
        let compose = self.compose_handle();
        let services = compose.services().await?;
        let started = Instant::now();
        loop {
            let sick = compose.not_healthy(&services).await?;
            if sick.is_empty() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > within {
                bail!("not healthy after {within:?}: {}", sick.join(", "));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A visitor of the site from the host: DNS through foobar-dns, HTTPS to the balancers'
    /// addresses on `edge` (which the host reaches), trusting the stack's CA.
    pub fn visitor_config(&self) -> VisitorConfig {
        VisitorConfig {
            dns_servers: self.dns_servers(),
            host: SITE.into(),
            port: 443,
            ca_file: self.ca_file.clone(),
            ..VisitorConfig::default()
        }
    }

    /// An address on `edge`: dns-1 is .10, lb-1 .11, lb-2 .12, dns-2 .13.
    pub fn edge_address(host: u8) -> IpAddr {
        format!("{EDGE_NET}.{host}")
            .parse()
            .expect("a valid address")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        progress("docker compose down --volumes");
        let _ = std::process::Command::new("docker")
            .arg("compose")
            .arg("--env-file")
            .arg(&self.env_file)
            .arg("--file")
            .arg(self.repo.join("docker-compose.yml"))
            .args(["down", "--volumes", "--timeout", "5"])
            .current_dir(&self.repo)
            .stdin(Stdio::null())
            .output();
    }
}

/// One container of `docker compose ps --format json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Container {
    #[serde(flatten)]
    pub state: ServiceState,
    #[serde(rename = "Publishers", default)]
    pub publishers: Option<Vec<Publisher>>,
}

/// A port as `docker compose ps` lists it; `published_port` 0 means not published.
#[derive(Debug, Clone, Deserialize)]
pub struct Publisher {
    #[serde(rename = "URL", default)]
    pub url: String,
    #[serde(rename = "TargetPort")]
    pub target_port: u16,
    #[serde(rename = "PublishedPort")]
    pub published_port: u16,
    #[serde(rename = "Protocol", default)]
    pub protocol: String,
}

/// `ADDRESS:PORT open|closed` for each target, as [`probe_script`]'s output says.
pub fn parse_probes(text: &str) -> anyhow::Result<Vec<(String, bool)>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| match line.split_once(' ') {
            Some((target, "open")) => Ok((target.to_owned(), true)),
            Some((target, "closed")) => Ok((target.to_owned(), false)),
            _ => bail!("unexpected probe line {line:?}"),
        })
        .collect()
}

/// A bash script that tries a TCP connection to each `address:port` at once (2 s each at
/// most) and prints `address:port open` or `address:port closed` for each.
pub fn probe_script(targets: &[(IpAddr, u16)]) -> String {
    let list: Vec<String> = targets.iter().map(|(a, p)| format!("{a}:{p}")).collect();
    format!(
        "for t in {}; do ( \
           if timeout 2 bash -c \"exec 3<>/dev/tcp/${{t%:*}}/${{t##*:}}\" 2>/dev/null; \
           then echo \"$t open\"; else echo \"$t closed\"; fi ) & \
         done; wait",
        list.join(" ")
    )
}

/// Progress of the long steps, on stderr so `cargo test` shows it as it goes.
pub fn progress(what: &str) {
    eprintln!("==> stack test: {what}");
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `config/` copied, with the zone's `edge` addresses moved to the tests' subnet.
fn copy_config(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| from.display().to_string())? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_config(&entry.path(), &target)?;
        } else if entry.path().extension().is_some_and(|e| e == "zone") {
            let zone = std::fs::read_to_string(entry.path())?;
            std::fs::write(&target, zone.replace("10.153.53.", &format!("{EDGE_NET}.")))?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(unix)]
fn make_readable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            make_readable(&entry?.path())?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn make_readable(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_lines_are_read_and_garbage_is_refused() {
        let probes = parse_probes("10.0.0.1:3306 closed\n10.0.0.2:443 open\n").unwrap();
        assert_eq!(
            probes,
            vec![
                ("10.0.0.1:3306".into(), false),
                ("10.0.0.2:443".into(), true)
            ]
        );
        assert!(parse_probes("10.0.0.1:3306 maybe\n").is_err());
    }

    #[test]
    fn the_probe_script_names_every_target() {
        let script = probe_script(&[("10.0.0.1".parse().unwrap(), 3306)]);
        assert!(script.contains("10.0.0.1:3306"), "{script}");
    }

    #[test]
    fn the_config_copy_moves_the_zone_to_the_tests_subnet() {
        let dir = tempfile::tempdir().unwrap();
        copy_config(&repo_root().join("config"), dir.path()).unwrap();
        let zone = std::fs::read_to_string(dir.path().join("zones/foobar.com.zone")).unwrap();
        assert!(
            zone.contains(&format!("www     IN A    {EDGE_NET}.11")),
            "{zone}"
        );
        assert!(
            zone.contains(&format!("ns2     IN A    {EDGE_NET}.13")),
            "{zone}"
        );
        assert!(!zone.contains("10.153.53."), "{zone}");
        assert!(dir.path().join("prometheus/prometheus.yml").exists());
    }
}
