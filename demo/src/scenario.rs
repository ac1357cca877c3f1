//! The demo itself: a steady load, and under it each fault applied to each component in turn
//! (a [`Step`]), held, restored, and waited for until the whole stack is healthy and fully
//! redundant again; then the verdict. `db-primary` and `db-replica` are resolved to the nodes
//! that hold those roles at the moment of each fault ([`Topology`]).
//!
//! [`Scenario::run`] is what `make demo` runs and what the stack's tests call, on compose;
//! [`Scenario::run_on`] the same on any [`Runtime`] (`make swarm-demo`: a swarm, where the
//! engine, not the demo, restores a killed task). It prints its progress and a line per second
//! through the `out` function it is given, and returns a [`Report`] with everything the
//! table, the picture and a test's assertions need.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure};
use tokio::task::JoinSet;

use crate::account::{self, ComponentResult, Redundancy, Targets, Window};
use crate::compose::Compose;
use crate::faults::{self, Fault, PRIMARY, REPLICA, Step};
use crate::load::{Load, LoadConfig, Records};
use crate::record::Record;
use crate::roles::{self, Topology};
use crate::runtime::{Action, Runtime};
use crate::svg;
use crate::timeline::{self, Event, EventKind, Second};
use crate::verify::newest_post_id;
use crate::verify::{self, Verification};
use crate::visitor::{Visitor, VisitorConfig};

/// Time for the docker commands of one fault, on top of the waits.
const COMMANDS_ALLOWANCE: Duration = Duration::from_secs(60);

/// Everything the demo can be told.
#[derive(Debug, Clone)]
pub struct Config {
    pub visitor: VisitorConfig,
    pub load: LoadConfig,
    /// The folder of the stack's docker-compose.yml.
    pub compose_dir: PathBuf,
    /// Another compose file than the folder's own.
    pub compose_file: Option<PathBuf>,
    /// An environment file for compose (`--env-file`): the project's name, ports, addresses.
    pub compose_env_file: Option<PathBuf>,
    /// Each fault is applied to each component in this order, each restored before the next.
    pub components: Vec<String>,
    /// Applied in this order, each to every component.
    pub faults: Vec<Fault>,
    /// Load before the first kill.
    pub warmup: Duration,
    /// How long a fault lasts.
    pub hold: Duration,
    /// Load between all-healthy and the next fault.
    pub settle: Duration,
    /// Longest wait for all-healthy and redundant after a restore, before the demo gives up.
    pub healthy_timeout: Duration,
    pub targets: Targets,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            visitor: VisitorConfig::default(),
            load: LoadConfig::default(),
            compose_dir: PathBuf::from("."),
            compose_file: None,
            compose_env_file: None,
            components: [
                "dns-1",
                "dns-2",
                "web-a",
                "lb-1",
                "router-a",
                "db-replica",
                "db-primary",
            ]
            .map(String::from)
            .to_vec(),
            faults: vec![Fault::Kill],
            warmup: Duration::from_secs(5),
            hold: Duration::from_secs(10),
            settle: Duration::from_secs(5),
            healthy_timeout: Duration::from_secs(120),
            targets: Targets::default(),
        }
    }
}

/// The demo's results.
#[derive(Debug, Clone)]
pub struct Report {
    /// One per fault and component, in order.
    pub components: Vec<ComponentResult>,
    /// Faults not applied (`pause lb-1`) because the stack did not get healthy and
    /// redundant again before them.
    pub skipped: Vec<String>,
    /// Why the faults stopped early, when the router said (a node left with errant
    /// transactions).
    pub stopped: Option<String>,
    pub verification: Verification,
    pub seconds: Vec<Second>,
    pub events: Vec<Event>,
    pub requests: usize,
    pub failed: usize,
    pub duration: Duration,
    pub targets: Targets,
}

impl Report {
    /// Every target met, every fault applied, nothing lost or doubled.
    pub fn passed(&self) -> bool {
        self.skipped.is_empty()
            && self.verification.passed()
            && self
                .components
                .iter()
                .all(|c| c.verdict(&self.targets).passed())
    }

    /// The table, the write check and the overall verdict, for a person.
    pub fn text(&self) -> String {
        let mut text = account::table(&self.components, &self.targets);
        if !self.skipped.is_empty() {
            text.push_str(&format!(
                "not applied (stack not healthy and redundant): {} FAIL\n",
                self.skipped.join(", ")
            ));
        }
        if let Some(why) = &self.stopped {
            text.push_str(&format!("stopped: {why}\n"));
        }
        text.push_str(&self.verification.summary());
        text.push('\n');
        text.push_str(&format!(
            "{} requests in {:.0}s, {} failed: {}\n",
            self.requests,
            self.duration.as_secs_f64(),
            self.failed,
            if self.passed() {
                "every target met"
            } else {
                "some targets missed"
            }
        ));
        text
    }

    pub fn svg(&self) -> String {
        svg::render(
            &self.seconds,
            &self.events,
            "foobar failover demo: requests per second as a visitor saw them",
        )
    }
}

/// The DNS servers a visitor asks, for progress lines.
fn servers(visitor: &VisitorConfig) -> String {
    let servers: Vec<String> = visitor.dns_servers.iter().map(|s| s.to_string()).collect();
    servers.join(", ")
}

/// The fault-restore sequence around the load.
pub struct Scenario;

impl Scenario {
    /// Runs the demo against the compose stack that `config` names; `out` receives progress
    /// and timeline lines.
    pub async fn run<F>(config: &Config, out: F) -> anyhow::Result<Report>
    where
        F: Fn(&str) + Send + Sync + 'static,
    {
        let compose = Compose::new(
            config.compose_dir.clone(),
            config.compose_file.clone(),
            config.compose_env_file.clone(),
        );
        Self::run_on(&compose, config, out).await
    }

    /// Runs the demo against the stack `runtime` runs (compose or a swarm); `config`'s
    /// compose fields are not read.
    pub async fn run_on<R, F>(runtime: &R, config: &Config, out: F) -> anyhow::Result<Report>
    where
        R: Runtime,
        F: Fn(&str) + Send + Sync + 'static,
    {
        let out: Out = Arc::new(out);
        let t0 = Instant::now();
        let progress = |text: &str| out(&format!("==> [{:>3}s] {text}", t0.elapsed().as_secs()));

        progress("checking that every service of the stack is up and healthy");
        let steps = faults::plan(&config.faults, &config.components)?;
        faults::check_root(&config.faults)?;
        if let Some(fault) = config.faults.iter().find(|f| !runtime.faults().contains(f)) {
            let names: Vec<&str> = runtime.faults().iter().map(|f| f.name()).collect();
            bail!(
                "the {fault} fault is not applied on this stack (only {})",
                names.join(", ")
            );
        }
        let services = runtime.services().await?;
        // The database roles are asked of the router; without one, every component is a service.
        let has_router = services.iter().any(|s| s == roles::ROUTER);
        for component in &config.components {
            let role = has_router && (component == PRIMARY || component == REPLICA);
            ensure!(
                role || services.contains(component),
                "{component} is not a service of the stack ({})",
                services.join(", ")
            );
        }
        let not_healthy = runtime.not_healthy(&services).await?;
        if !not_healthy.is_empty() {
            bail!(
                "not healthy: {} (start the stack first: {})",
                not_healthy.join(", "),
                runtime.start_hint()
            );
        }
        if has_router {
            let topology = Topology::ask(runtime).await?;
            ensure!(
                topology.redundant(),
                "{} sees writer {}, reader {}: wait until it shows a writer and a replicating \
                 reader (a failed-over node is rejoined by itself)",
                roles::ROUTER,
                topology.writer.as_deref().unwrap_or("none"),
                topology.reader.as_deref().unwrap_or("none"),
            );
        }
        let visitor_config = Arc::new(config.visitor.clone());
        let mut checker = Visitor::new(Arc::clone(&visitor_config))?;
        let before_run = newest_post_id(&mut checker).await.map_err(|e| {
            e.context(format!(
                "https://{} does not answer through the DNS servers at {}",
                config.visitor.host,
                servers(&config.visitor)
            ))
        })?;

        let mut load_config = config.load.clone();
        // Longer than the scenario can take, so the load stops by itself only if it hangs.
        let phases = config.hold + config.healthy_timeout + config.settle + COMMANDS_ALLOWANCE;
        load_config.max_duration = load_config
            .max_duration
            .min(config.warmup + phases * steps.len() as u32 + COMMANDS_ALLOWANCE);
        if load_config.run_id.is_empty() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            load_config.run_id = format!("run {}", now.as_secs());
        }
        progress(&format!(
            "load: {} readers ({}/s), {} writers ({}/s), through {} at {}",
            load_config.readers,
            load_config.read_rate,
            load_config.writers,
            load_config.write_rate,
            config.visitor.host,
            servers(&config.visitor)
        ));
        let load = Load::start(Arc::clone(&visitor_config), &load_config, t0)?;
        let phase = Arc::new(Mutex::new("warm-up".to_owned()));
        let mut ticker = JoinSet::new();
        ticker.spawn(live_lines(
            load.records(),
            Arc::clone(&phase),
            t0,
            Arc::clone(&out),
        ));
        let set_phase = |text: String| *phase.lock().expect("phase lock") = text;

        tokio::time::sleep(config.warmup).await;
        let mut events = Vec::new();
        let mut windows: Vec<Window> = Vec::new();
        let mut skipped = Vec::new();
        let mut stopped = None;
        for (i, step) in steps.iter().enumerate() {
            if windows
                .last()
                .is_some_and(|w| w.healthy.is_none() || w.redundant == Redundancy::Never)
            {
                skipped.extend(steps[i..].iter().map(Step::label));
                break;
            }
            let (fault, component) = (step.fault, step.component.as_str());
            let label = step.label();
            // The roles of the moment: a failover earlier in the run (or before it) swapped them.
            let (node, peer) = if component == PRIMARY || component == REPLICA {
                let topology = Topology::ask(runtime).await?;
                let node = topology.resolve(component)?;
                let peer = match fault {
                    Fault::Partial => Some(topology.resolve(REPLICA)?),
                    _ => None,
                };
                (node, peer)
            } else {
                (component.to_owned(), None)
            };
            for service in [Some(&node), peer.as_ref()].into_iter().flatten() {
                ensure!(
                    services.contains(service),
                    "{} names {service}, which is not a service of the stack",
                    roles::ROUTER
                );
            }
            let applied = t0.elapsed();
            let on = if node == component {
                String::new()
            } else {
                format!(" (now {node})")
            };
            // A runtime that replaces a killed container itself (a swarm's engine) restores
            // it at once: no hold, and "to healthy" counts from the kill.
            let engine_repairs = fault == Fault::Kill && runtime.repairs_kills();
            progress(&format!(
                "{label}{on}: {}",
                describe(fault, peer.as_deref(), engine_repairs)
            ));
            set_phase(label.clone());
            fault
                .perform(Action::Apply, runtime, &node, peer.as_deref())
                .await?;
            events.push(event(applied, EventKind::Fault, step));
            if !engine_repairs {
                tokio::time::sleep(config.hold).await;
                progress(&format!("restore {component}{on}"));
            }
            fault
                .perform(Action::Restore, runtime, &node, peer.as_deref())
                .await
                .map_err(|e| {
                    e.context(format!(
                        "{node} may still be under {label}: mend it by hand"
                    ))
                })?;
            let restored = t0.elapsed();
            events.push(event(restored, EventKind::Restored, step));
            set_phase(format!("restored {component}"));

            let healthy = wait_healthy(runtime, &services, config.healthy_timeout, t0).await?;
            let mut redundant = Redundancy::NotChecked;
            match healthy {
                Some(at) => {
                    progress(&format!(
                        "every service healthy again, {:.1}s after the restore",
                        (at - restored).as_secs_f64()
                    ));
                    events.push(event(at, EventKind::Healthy, step));
                    if has_router {
                        let within = config.healthy_timeout.saturating_sub(at - restored);
                        let why;
                        (redundant, why) = wait_redundant(runtime, within, t0).await;
                        match (redundant, why) {
                            (Redundancy::At(at), _) => progress(&format!(
                                "a writer and a replicating reader again, {:.1}s after the restore",
                                (at - restored).as_secs_f64()
                            )),
                            (_, Some(why)) => {
                                progress(&format!("no full redundancy: {why}; stopping"));
                                stopped = Some(why);
                            }
                            _ => progress(&format!(
                                "no writer and replicating reader {:?} after the restore: stopping",
                                config.healthy_timeout
                            )),
                        }
                    }
                }
                None => progress(&format!(
                    "the stack is not healthy {:?} after restoring {component}: stopping the faults",
                    config.healthy_timeout
                )),
            }
            set_phase(format!("after {label}"));
            let settle = healthy.is_some() && redundant != Redundancy::Never;
            windows.push(Window {
                fault,
                component: component.to_owned(),
                node,
                killed: applied,
                restored,
                healthy,
                redundant,
                end: Duration::MAX,
            });
            if settle {
                tokio::time::sleep(config.settle).await;
            }
        }

        progress("stopping the load");
        let records = load.stop().await;
        ticker.abort_all();
        let load_end = records.iter().map(Record::end).max().unwrap_or_default();
        let next_kills: Vec<Duration> = windows.iter().skip(1).map(|w| w.killed).collect();
        for (window, next) in windows
            .iter_mut()
            .zip(next_kills.into_iter().map(Some).chain([None]))
        {
            window.end = next.unwrap_or(load_end + Duration::from_millis(1));
        }

        let written = records.iter().filter(|r| r.marker.is_some()).count();
        progress(&format!(
            "checking {written} writes against the database, through the stack"
        ));
        let verification = verify::verify(&mut checker, &records, before_run).await?;
        let lost: HashSet<String> = verification.lost.iter().cloned().collect();
        let components = account::account(&records, &windows, &lost, &config.targets);
        Ok(Report {
            components,
            skipped,
            stopped,
            verification,
            seconds: timeline::seconds(&records),
            events,
            requests: records.len(),
            failed: records.iter().filter(|r| !r.ok()).count(),
            duration: load_end,
            targets: config.targets.clone(),
        })
    }
}

fn event(at: Duration, kind: EventKind, step: &Step) -> Event {
    Event {
        at,
        kind,
        fault: step.fault,
        component: step.component.clone(),
    }
}

/// What a fault does, for the progress line.
fn describe(fault: Fault, peer: Option<&str>, engine_repairs: bool) -> String {
    match fault {
        Fault::Kill if engine_repairs => "SIGKILL to one task; the engine starts a new one".into(),
        Fault::Kill => "SIGKILL".into(),
        Fault::Pause => "frozen (docker pause)".into(),
        Fault::Partition => "every packet dropped (iptables in its namespace)".into(),
        Fault::Partial => format!(
            "cut from {} both ways (iptables), the routers still reach both",
            peer.unwrap_or(REPLICA)
        ),
    }
}

/// Polls router-a's topology every second until it shows a writer and a replicating reader;
/// gives up at once, saying why, when a node has errant transactions (never rejoined by itself).
async fn wait_redundant(
    runtime: &impl Runtime,
    within: Duration,
    t0: Instant,
) -> (Redundancy, Option<String>) {
    let deadline = Instant::now() + within;
    loop {
        match Topology::ask(runtime).await {
            Ok(topology) if topology.redundant() => return (Redundancy::At(t0.elapsed()), None),
            Ok(topology) if topology.errant().is_some() => {
                return (Redundancy::Never, topology.errant());
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return (Redundancy::Never, None);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Polls the services' health every second; when all are healthy, the time since `t0`.
async fn wait_healthy(
    runtime: &impl Runtime,
    services: &[String],
    within: Duration,
    t0: Instant,
) -> anyhow::Result<Option<Duration>> {
    let deadline = Instant::now() + within;
    loop {
        if runtime.not_healthy(services).await?.is_empty() {
            return Ok(Some(t0.elapsed()));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

type Out = Arc<dyn Fn(&str) + Send + Sync>;

/// One line per second: what ended in the last second, and the current phase.
async fn live_lines(records: Records, phase: Arc<Mutex<String>>, t0: Instant, out: Out) {
    let mut seen = 0;
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::from_std(t0) + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    loop {
        ticks.tick().await;
        let mut second = Second {
            at: t0.elapsed().as_secs().saturating_sub(1),
            ..Second::default()
        };
        {
            let records = records.lock().expect("records lock");
            for record in &records[seen..] {
                second.add(record);
            }
            seen = records.len();
        }
        let phase = phase.lock().expect("phase lock").clone();
        out(&second.line(&phase));
    }
}
