//! Cross-service rollout planning over the service dependency graph.
//!
//! An edge `a -> b` says `a` depends on (calls) `b`, so `b` deploys first. The plan's waves are
//! the longest-path layers of the selected services' graph (a service goes one wave after the
//! last of its dependencies), each cut to the parallelism limit. Each service gets a canary
//! stage plan by its risk, an expected duration from its past deployments, and its blast
//! radius: how many services depend on it, directly or not, in the whole graph.

use std::collections::{HashMap, VecDeque};

use maestro_datasets::schema::RolloutPlan;
use petgraph::graph::{DiGraph, NodeIndex};
use rayon::prelude::*;
use serde::Serialize;

/// Past deployments' median minutes per service, when the lake has none for it.
const DEFAULT_MINUTES: f64 = 10.0;
/// Blast radius counting stops here: beyond it the number says "at least". Counting every
/// service's transitive dependents exactly costs the sum of their sizes, which grows towards
/// services squared on a graph whose hubs most services reach (on a random graph of a million
/// services, a third of them had more than 1,000); the cap bounds each count's cost and still
/// tells a hub from a leaf.
pub const BLAST_RADIUS_CAP: usize = 100;

/// What a plan is computed from, besides the graph.
pub struct PlanInputs {
    /// Median minutes of past deployments, per service.
    pub minutes: HashMap<String, f64>,
    /// Probability of the latest risk verdict, per service.
    pub risk: HashMap<String, f64>,
    /// Probability from which a service goes out as a canary, and from which it is watched most.
    pub canary_above: f64,
    pub hold_above: f64,
}

/// A plan, or the cycles that prevent one.
#[derive(Debug, Serialize)]
pub struct Plan {
    #[serde(skip)]
    pub services: Vec<RolloutPlan>,
    pub plan_id: String,
    pub waves: Vec<Wave>,
    /// Services on the longest chain of dependencies, first to deploy first.
    pub critical_path: Vec<String>,
    pub critical_path_minutes: f64,
    pub total_minutes: f64,
    pub parallelism: usize,
}

/// One wave: services deployed together.
#[derive(Debug, Serialize)]
pub struct Wave {
    pub wave: i64,
    pub services: Vec<String>,
    /// The longest expected duration in the wave: they run side by side.
    pub expected_minutes: f64,
}

/// Why no plan could be made.
#[derive(Debug)]
pub struct Cycles(pub Vec<Vec<String>>);

/// Adjacency lists packed in two arrays: the neighbours of `v` are
/// `targets[offsets[v]..offsets[v + 1]]`, in ascending order.
struct Adjacency {
    offsets: Vec<u32>,
    targets: Vec<u32>,
}

impl Adjacency {
    /// From (node, neighbour) pairs sorted and without repeats.
    fn new(nodes: usize, pairs: &[(u32, u32)]) -> Adjacency {
        let mut offsets = vec![0u32; nodes + 1];
        for &(node, _) in pairs {
            offsets[node as usize + 1] += 1;
        }
        for i in 0..nodes {
            offsets[i + 1] += offsets[i];
        }
        Adjacency {
            offsets,
            targets: pairs.iter().map(|&(_, neighbour)| neighbour).collect(),
        }
    }

    fn of(&self, node: u32) -> &[u32] {
        let node = node as usize;
        &self.targets[self.offsets[node] as usize..self.offsets[node + 1] as usize]
    }
}

/// The service dependency graph. Services are numbered in name order, so ordering by number
/// orders by name: plans come out the same whatever order the edges were read in.
pub struct ServiceGraph {
    names: Vec<String>,
    /// Dependencies of each service (`from -> to`: from depends on to).
    depends_on: Adjacency,
    /// Services that depend on each: the reverse edges.
    dependents: Adjacency,
}

impl ServiceGraph {
    /// The graph of `edges` (`from` depends on `to`; repeats count once) and of the `more`
    /// services, which need not have an edge.
    pub fn new(edges: &[(&str, &str)], more: &[&str]) -> ServiceGraph {
        let started = std::time::Instant::now();
        // Numbered as first seen, then renumbered by name.
        let mut seen: foldhash::HashMap<&str, u32> = foldhash::HashMap::default();
        seen.reserve(edges.len() + more.len());
        let mut first_seen: Vec<&str> = Vec::with_capacity(edges.len() + more.len());
        let mut number = |name| -> u32 {
            *seen.entry(name).or_insert_with(|| {
                first_seen.push(name);
                first_seen.len() as u32 - 1
            })
        };
        let mut pairs: Vec<(u32, u32)> = edges
            .iter()
            .map(|&(from, to)| (number(from), number(to)))
            .collect();
        for &name in more {
            number(name);
        }
        drop(seen);
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "graph: numbered");
        let mut by_name: Vec<u32> = (0..first_seen.len() as u32).collect();
        by_name.par_sort_unstable_by_key(|&i| first_seen[i as usize]);
        let mut renumber = vec![0u32; by_name.len()];
        for (rank, &i) in by_name.iter().enumerate() {
            renumber[i as usize] = rank as u32;
        }
        for pair in &mut pairs {
            *pair = (renumber[pair.0 as usize], renumber[pair.1 as usize]);
        }
        tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            "graph: sorted by name"
        );
        pairs.par_sort_unstable();
        pairs.dedup();
        let depends_on = Adjacency::new(by_name.len(), &pairs);
        for pair in &mut pairs {
            *pair = (pair.1, pair.0);
        }
        pairs.par_sort_unstable();
        let dependents = Adjacency::new(by_name.len(), &pairs);
        tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            "graph: adjacency"
        );
        ServiceGraph {
            names: by_name
                .iter()
                .map(|&i| first_seen[i as usize].to_string())
                .collect(),
            depends_on,
            dependents,
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    fn number_of(&self, name: &str) -> Option<u32> {
        self.names
            .binary_search_by(|n| n.as_str().cmp(name))
            .ok()
            .map(|i| i as u32)
    }

    /// How many services reach `start` through dependencies, capped at `BLAST_RADIUS_CAP`.
    /// `known` holds the radii found so far: one dependent at the cap puts `start` at it too,
    /// since everything that reaches the dependent reaches `start` (even through a cycle
    /// outside the plan, which can only take `start` itself out of the count). That settles
    /// most services of a large graph without a search.
    fn blast_radius(
        &self,
        start: u32,
        known: &[Option<u32>],
        seen: &mut [u32],
        queue: &mut Vec<u32>,
    ) -> u32 {
        let cap = BLAST_RADIUS_CAP as u32;
        let direct = self.dependents.of(start);
        if direct.is_empty() {
            return 0;
        }
        if direct
            .iter()
            .any(|&d| known[d as usize].is_some_and(|r| r >= cap))
        {
            return cap;
        }
        // Breadth-first over dependents; `queue` is reused from call to call.
        let stamp = start + 1;
        queue.clear();
        queue.push(start);
        seen[start as usize] = stamp;
        let mut next = 0;
        while next < queue.len() {
            let node = queue[next];
            next += 1;
            for &dependent in self.dependents.of(node) {
                if seen[dependent as usize] != stamp {
                    seen[dependent as usize] = stamp;
                    queue.push(dependent);
                    if queue.len() > BLAST_RADIUS_CAP {
                        return cap;
                    }
                }
            }
        }
        queue.len() as u32 - 1
    }
}

/// Plans the rollout of `services` (every service of the graph when None).
pub fn plan(
    graph: &ServiceGraph,
    inputs: &PlanInputs,
    services: Option<&[String]>,
    parallelism: usize,
) -> Result<Plan, Cycles> {
    let started = std::time::Instant::now();
    let count = graph.len();
    let mut is_selected = vec![services.is_none(); count];
    for name in services.unwrap_or_default() {
        if let Some(s) = graph.number_of(name) {
            is_selected[s as usize] = true;
        }
    }
    // In number order, which is name order.
    let selected: Vec<u32> = (0..count as u32)
        .filter(|&s| is_selected[s as usize])
        .collect();

    // Kahn's ordering over the selected services: a service is ready once every selected
    // dependency is placed. Its layer is one after its last dependency's, and the critical
    // path runs through the dependency that finishes last (the first in name order on a tie).
    let fallback_minutes = median_of(inputs.minutes.values()).unwrap_or(DEFAULT_MINUTES);
    let history_minutes = |s: u32| inputs.minutes.get(&graph.names[s as usize]).copied();
    let stages: Vec<Option<Stage>> = (0..count as u32)
        .map(|s| {
            is_selected[s as usize].then(|| {
                canary_plan(
                    inputs,
                    &graph.names[s as usize],
                    history_minutes(s).unwrap_or(fallback_minutes),
                )
            })
        })
        .collect();
    let minutes_of = |s: u32| {
        stages[s as usize]
            .as_ref()
            .map_or(0.0, |stage| stage.minutes)
    };
    let mut waiting_on = vec![0u32; count];
    for &s in &selected {
        waiting_on[s as usize] = graph
            .depends_on
            .of(s)
            .iter()
            .filter(|&&d| is_selected[d as usize])
            .count() as u32;
    }
    let mut order: Vec<u32> = selected
        .iter()
        .copied()
        .filter(|&s| waiting_on[s as usize] == 0)
        .collect();
    let mut layer = vec![0u32; count];
    let mut finish = vec![0.0f64; count];
    let mut came_from: Vec<Option<u32>> = vec![None; count];
    let mut next = 0;
    while next < order.len() {
        let s = order[next];
        next += 1;
        let mut start = 0.0;
        for &d in graph.depends_on.of(s) {
            if is_selected[d as usize] {
                layer[s as usize] = layer[s as usize].max(layer[d as usize] + 1);
                if finish[d as usize] > start {
                    start = finish[d as usize];
                    came_from[s as usize] = Some(d);
                }
            }
        }
        finish[s as usize] = start + minutes_of(s);
        for &dependent in graph.dependents.of(s) {
            if is_selected[dependent as usize] {
                waiting_on[dependent as usize] -= 1;
                if waiting_on[dependent as usize] == 0 {
                    order.push(dependent);
                }
            }
        }
    }
    if order.len() < selected.len() {
        let stuck: Vec<u32> = selected
            .iter()
            .copied()
            .filter(|&s| waiting_on[s as usize] > 0)
            .collect();
        return Err(Cycles(cycles(graph, &stuck)));
    }
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "ordered");

    let mut last: Option<u32> = None;
    for &s in &selected {
        if last.is_none_or(|l| finish[s as usize] > finish[l as usize]) {
            last = Some(s);
        }
    }
    let critical_path_minutes = last.map_or(0.0, |s| finish[s as usize]);
    let mut critical = Vec::new();
    while let Some(s) = last {
        critical.push(s);
        last = came_from[s as usize];
    }
    critical.reverse();

    // Waves: each layer in name order, cut to the parallelism limit.
    let layers = selected
        .iter()
        .map(|&s| layer[s as usize])
        .max()
        .map_or(0, |l| l + 1);
    let mut by_layer: Vec<Vec<u32>> = vec![Vec::new(); layers as usize];
    for &s in &selected {
        by_layer[layer[s as usize] as usize].push(s);
    }
    let limit = parallelism.max(1);
    let mut waves = Vec::new();
    let mut wave_of = vec![0i64; count];
    for members in &by_layer {
        for chunk in members.chunks(limit) {
            let number = waves.len() as i64 + 1;
            for &s in chunk {
                wave_of[s as usize] = number;
            }
            waves.push(Wave {
                wave: number,
                services: chunk
                    .iter()
                    .map(|&s| graph.names[s as usize].clone())
                    .collect(),
                expected_minutes: chunk.iter().map(|&s| minutes_of(s)).fold(0.0, f64::max),
            });
        }
    }
    let total_minutes = waves.iter().map(|w| w.expected_minutes).sum();
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        waves = waves.len(),
        "waves and critical path"
    );

    // Blast radii, dependents first so that a dependent's radius is known before its
    // dependencies'.
    let mut radius: Vec<Option<u32>> = vec![None; count];
    let mut seen = vec![0u32; count];
    let mut queue = Vec::with_capacity(BLAST_RADIUS_CAP + 1);
    for &s in order.iter().rev() {
        radius[s as usize] = Some(graph.blast_radius(s, &radius, &mut seen, &mut queue));
    }
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "blast radii");

    let mut on_critical = vec![false; count];
    for &s in &critical {
        on_critical[s as usize] = true;
    }
    // Rows by wave, and by name within a wave: the layers' order. Built on every core: a
    // million rows of owned text are most of a large plan's time.
    let in_order: Vec<u32> = by_layer.iter().flatten().copied().collect();
    let mut rows: Vec<RolloutPlan> = in_order
        .par_iter()
        .map(|&s| {
            let stage = stages[s as usize]
                .as_ref()
                .expect("selected services have a stage");
            RolloutPlan {
                plan_id: String::new(),
                service: graph.names[s as usize].clone(),
                wave: wave_of[s as usize],
                depends_on: graph
                    .depends_on
                    .of(s)
                    .iter()
                    .filter(|&&d| is_selected[d as usize])
                    .map(|&d| graph.names[d as usize].clone())
                    .collect(),
                strategy: stage.strategy.to_string(),
                traffic_steps: stage.steps.to_vec(),
                expected_minutes: stage.minutes,
                has_history: history_minutes(s).is_some(),
                risk: inputs.risk.get(&graph.names[s as usize]).copied(),
                blast_radius: radius[s as usize].unwrap_or(0) as i64,
                is_on_critical_path: on_critical[s as usize],
            }
        })
        .collect();
    let plan_id = plan_id(&rows, limit);
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "rows and plan id"
    );
    rows.par_iter_mut()
        .for_each(|row| row.plan_id.clone_from(&plan_id));
    Ok(Plan {
        plan_id,
        services: rows,
        waves,
        critical_path: critical
            .iter()
            .map(|&s| graph.names[s as usize].clone())
            .collect(),
        critical_path_minutes,
        total_minutes,
        parallelism: limit,
    })
}

/// The plan's id: a hash of what it says, so the same plan has the same id.
fn plan_id(rows: &[RolloutPlan], parallelism: usize) -> String {
    use sha2::{Digest, Sha256};
    // Fields go in as bytes, each text ended by a separator byte, gathered first and hashed
    // in one pass: a million rows hash in a fraction of a second, where formatting them took
    // seconds and hashing field by field over one.
    let mut bytes: Vec<u8> = Vec::with_capacity(rows.len() * 64);
    bytes.extend(parallelism.to_le_bytes());
    for row in rows {
        for text in [&row.service, &row.strategy]
            .into_iter()
            .chain(row.depends_on.iter())
        {
            bytes.extend(text.as_bytes());
            bytes.push(0x1f);
        }
        bytes.extend(row.wave.to_le_bytes());
        for value in row.traffic_steps.iter().chain([&row.expected_minutes]) {
            bytes.extend(value.to_le_bytes());
        }
        bytes.push(0x1e);
    }
    let digest = Sha256::digest(&bytes);
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("plan-{hex}")
}

/// How one service goes out.
struct Stage {
    strategy: &'static str,
    /// Traffic share of each step, in percent, ending at 100.
    steps: &'static [f64],
    /// Deployment plus bake time.
    minutes: f64,
}

/// The stage of a service by its risk: below `canary_above` a rolling deployment; up to
/// `hold_above` a canary at 5, 25, 50 and 100% with 10 minutes of bake per step; above it (or
/// with no verdict at all, treated as unknown and so watched) a slower canary from 1% with 20
/// minutes per step.
fn canary_plan(inputs: &PlanInputs, service: &str, deploy_minutes: f64) -> Stage {
    let (strategy, steps, bake): (&str, &'static [f64], f64) = match inputs.risk.get(service) {
        Some(&p) if p < inputs.canary_above => ("rolling", &[100.0], 0.0),
        Some(&p) if p < inputs.hold_above => ("canary", &[5.0, 25.0, 50.0, 100.0], 10.0),
        _ => ("canary", &[1.0, 5.0, 25.0, 50.0, 100.0], 20.0),
    };
    Stage {
        strategy,
        steps,
        minutes: deploy_minutes + bake * (steps.len() as f64 - 1.0),
    }
}

fn median_of<'a>(values: impl Iterator<Item = &'a f64>) -> Option<f64> {
    let mut sorted: Vec<f64> = values.copied().collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// Every cycle among the `stuck` services (those Kahn's ordering could not place), one path
/// per strongly connected component, each closed on its first service in name order.
fn cycles(graph: &ServiceGraph, stuck: &[u32]) -> Vec<Vec<String>> {
    // Deployment edges, dependency -> dependent, between stuck services.
    let mut sub: DiGraph<u32, ()> = DiGraph::with_capacity(stuck.len(), 0);
    let node_of: HashMap<u32, NodeIndex> = stuck.iter().map(|&s| (s, sub.add_node(s))).collect();
    for &s in stuck {
        for d in graph.depends_on.of(s) {
            if let Some(&from) = node_of.get(d) {
                sub.add_edge(from, node_of[&s], ());
            }
        }
    }
    let name = |n: NodeIndex| graph.names[sub[n] as usize].clone();
    let mut found = Vec::new();
    for component in petgraph::algo::tarjan_scc(&sub) {
        let is_cycle = component.len() > 1 || sub.contains_edge(component[0], component[0]);
        if !is_cycle {
            continue;
        }
        let members: std::collections::HashSet<NodeIndex> = component.iter().copied().collect();
        let start = *component
            .iter()
            .min_by_key(|n| sub[**n])
            .expect("a component has a node");
        // Breadth-first from the start back to it, inside the component: the shortest cycle.
        let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        let mut closing = None;
        'search: while let Some(node) = queue.pop_front() {
            for next in sub.neighbors(node) {
                if next == start {
                    closing = Some(node);
                    break 'search;
                }
                if members.contains(&next) && !parent.contains_key(&next) {
                    parent.insert(next, node);
                    queue.push_back(next);
                }
            }
        }
        let mut path = vec![start];
        let mut node = closing.expect("a strongly connected component closes a cycle");
        let mut back = Vec::new();
        while node != start {
            back.push(node);
            node = parent[&node];
        }
        back.reverse();
        path.extend(back);
        path.push(start);
        // Deployment edges point from dependency to dependent; the path reads as dependencies.
        let mut named: Vec<String> = path.into_iter().map(name).collect();
        named.reverse();
        found.push(named);
    }
    found.sort();
    found
}
