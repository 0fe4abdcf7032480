//! Cross-service rollout planning over the service dependency graph.
//!
//! An edge `a -> b` says `a` depends on (calls) `b`, so `b` deploys first. The plan's waves are
//! the longest-path layers of the selected services' graph (a service goes one wave after the
//! last of its dependencies), each cut to the parallelism limit. Each service gets a canary
//! stage plan by its risk, an expected duration from its past deployments, and its blast
//! radius: how many services depend on it, directly or not, in the whole graph.

use std::collections::{BTreeMap, HashMap, VecDeque};

use maestro_datasets::schema::RolloutPlan;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;

/// Past deployments' median minutes per service, when the lake has none for it.
const DEFAULT_MINUTES: f64 = 10.0;
/// Blast radius counting stops here: beyond it the number says "at least". Counting every
/// service's transitive dependents exactly costs the sum of their sizes, which grows towards
/// services squared on a graph whose hubs most services reach (on a random graph of a million
/// services, a third of them had more than 1,000); the cap bounds each count's cost and still
/// tells a hub from a leaf.
pub const BLAST_RADIUS_CAP: usize = 100;

/// What a plan is computed from.
pub struct PlanInputs {
    /// (from, to): `from` depends on `to`.
    pub edges: Vec<(String, String)>,
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

/// The graph of every service named in an edge or in `wanted`.
struct ServiceGraph {
    names: Vec<String>,
    index: foldhash::HashMap<String, usize>,
    /// Dependencies of each service (out-edges of `from -> to`).
    depends_on: Vec<Vec<usize>>,
    /// Services that depend on each (the reverse edges).
    dependents: Vec<Vec<usize>>,
}

impl ServiceGraph {
    fn new(edges: &[(String, String)], wanted: &[String]) -> ServiceGraph {
        let mut graph = ServiceGraph {
            names: Vec::new(),
            index: foldhash::HashMap::default(),
            depends_on: Vec::new(),
            dependents: Vec::new(),
        };
        for (from, to) in edges {
            let (a, b) = (graph.id(from), graph.id(to));
            graph.depends_on[a].push(b);
            graph.dependents[b].push(a);
        }
        for name in wanted {
            graph.id(name);
        }
        for list in graph
            .depends_on
            .iter_mut()
            .chain(graph.dependents.iter_mut())
        {
            list.sort_unstable();
            list.dedup();
        }
        graph
    }

    fn id(&mut self, name: &str) -> usize {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        let id = self.names.len();
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), id);
        self.depends_on.push(Vec::new());
        self.dependents.push(Vec::new());
        id
    }

    /// How many services reach `start` through dependencies, capped.
    fn blast_radius(&self, start: usize, seen: &mut [u32], stamp: u32) -> usize {
        let mut queue = VecDeque::from([start]);
        seen[start] = stamp;
        let mut count = 0;
        while let Some(node) = queue.pop_front() {
            for &dependent in &self.dependents[node] {
                if seen[dependent] != stamp {
                    seen[dependent] = stamp;
                    count += 1;
                    if count >= BLAST_RADIUS_CAP {
                        return count;
                    }
                    queue.push_back(dependent);
                }
            }
        }
        count
    }
}

/// Plans the rollout of `services` (every service of the graph when None).
pub fn plan(
    inputs: &PlanInputs,
    services: Option<&[String]>,
    parallelism: usize,
) -> Result<Plan, Cycles> {
    let started = std::time::Instant::now();
    let wanted: Vec<String> = services.map(<[String]>::to_vec).unwrap_or_default();
    let graph = ServiceGraph::new(&inputs.edges, &wanted);
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        services = graph.names.len(),
        "graph built"
    );
    let mut selected: Vec<usize> = match services {
        Some(names) => names.iter().map(|n| graph.index[n]).collect(),
        None => (0..graph.names.len()).collect(),
    };
    selected.sort_by(|&a, &b| graph.names[a].cmp(&graph.names[b]));
    selected.dedup();

    // The selected services' graph, with deployment edges (dependency -> dependent).
    let mut order_graph: DiGraph<usize, ()> = DiGraph::with_capacity(selected.len(), 0);
    // Indexed by service id: a vector, not a hash map, as every edge looks up both ends.
    let mut node_of: Vec<Option<NodeIndex>> = vec![None; graph.names.len()];
    for &service in &selected {
        node_of[service] = Some(order_graph.add_node(service));
    }
    for &service in &selected {
        let node = node_of[service].expect("added above");
        for &dependency in &graph.depends_on[service] {
            if let Some(from) = node_of[dependency] {
                order_graph.add_edge(from, node, ());
            }
        }
    }
    let order = match petgraph::algo::toposort(&order_graph, None) {
        Ok(order) => order,
        Err(_) => return Err(Cycles(cycles(&order_graph, &graph.names))),
    };
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "ordered");

    // Longest-path layers, and the critical path weighted by expected minutes.
    let fallback_minutes = median_of(inputs.minutes.values()).unwrap_or(DEFAULT_MINUTES);
    let minutes_of = |service: usize| -> (f64, bool) {
        match inputs.minutes.get(&graph.names[service]) {
            Some(&m) => (m, true),
            None => (fallback_minutes, false),
        }
    };
    let mut layer = vec![0usize; order_graph.node_count()];
    let mut finish = vec![0.0f64; order_graph.node_count()];
    let mut came_from: Vec<Option<NodeIndex>> = vec![None; order_graph.node_count()];
    let mut stages = Vec::with_capacity(order_graph.node_count());
    for node in 0..order_graph.node_count() {
        let service = order_graph[NodeIndex::new(node)];
        stages.push(canary_plan(
            inputs,
            &graph.names[service],
            minutes_of(service).0,
        ));
    }
    for &node in &order {
        let mut start = 0.0;
        for dependency in order_graph.neighbors_directed(node, petgraph::Direction::Incoming) {
            layer[node.index()] = layer[node.index()].max(layer[dependency.index()] + 1);
            if finish[dependency.index()] > start {
                start = finish[dependency.index()];
                came_from[node.index()] = Some(dependency);
            }
        }
        finish[node.index()] = start + stages[node.index()].2;
    }
    let mut last = order.iter().copied().max_by(|a, b| {
        finish[a.index()]
            .total_cmp(&finish[b.index()])
            .then(order_graph[*b].cmp(&order_graph[*a]))
    });
    let critical_path_minutes = last.map_or(0.0, |n| finish[n.index()]);
    let mut critical = Vec::new();
    while let Some(node) = last {
        critical.push(order_graph[node]);
        last = came_from[node.index()];
    }
    critical.reverse();

    // Waves: each layer in name order, cut to the parallelism limit.
    let mut by_layer: BTreeMap<usize, Vec<NodeIndex>> = BTreeMap::new();
    for node in order_graph.node_indices() {
        by_layer.entry(layer[node.index()]).or_default().push(node);
    }
    let limit = parallelism.max(1);
    let mut waves = Vec::new();
    let mut wave_of = vec![0i64; order_graph.node_count()];
    for nodes in by_layer.values() {
        for chunk in nodes.chunks(limit) {
            let number = waves.len() as i64 + 1;
            for node in chunk {
                wave_of[node.index()] = number;
            }
            waves.push(Wave {
                wave: number,
                services: chunk
                    .iter()
                    .map(|n| graph.names[order_graph[*n]].clone())
                    .collect(),
                expected_minutes: chunk
                    .iter()
                    .map(|n| stages[n.index()].2)
                    .fold(0.0, f64::max),
            });
        }
    }
    let total_minutes = waves.iter().map(|w| w.expected_minutes).sum();
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        waves = waves.len(),
        "waves and critical path"
    );

    let mut seen = vec![0u32; graph.names.len()];
    let mut on_critical = vec![false; graph.names.len()];
    for &service in &critical {
        on_critical[service] = true;
    }
    let mut rows = Vec::with_capacity(order_graph.node_count());
    for node in order_graph.node_indices() {
        let service = order_graph[node];
        let (strategy, steps, minutes) = &stages[node.index()];
        let mut depends_on: Vec<String> = order_graph
            .neighbors_directed(node, petgraph::Direction::Incoming)
            .map(|d| graph.names[order_graph[d]].clone())
            .collect();
        depends_on.sort();
        rows.push(RolloutPlan {
            plan_id: String::new(),
            service: graph.names[service].clone(),
            wave: wave_of[node.index()],
            depends_on,
            strategy: strategy.to_string(),
            traffic_steps: steps.clone(),
            expected_minutes: *minutes,
            has_history: minutes_of(service).1,
            risk: inputs.risk.get(&graph.names[service]).copied(),
            blast_radius: graph.blast_radius(service, &mut seen, node.index() as u32 + 1) as i64,
            is_on_critical_path: on_critical[service],
        });
    }
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "blast radii");
    rows.sort_by(|a, b| a.wave.cmp(&b.wave).then_with(|| a.service.cmp(&b.service)));
    let plan_id = plan_id(&rows, limit);
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "plan id");
    for row in &mut rows {
        row.plan_id.clone_from(&plan_id);
    }
    Ok(Plan {
        plan_id,
        services: rows,
        waves,
        critical_path: critical.iter().map(|&s| graph.names[s].clone()).collect(),
        critical_path_minutes,
        total_minutes,
        parallelism: limit,
    })
}

/// The plan's id: a hash of what it says, so the same plan has the same id.
fn plan_id(rows: &[RolloutPlan], parallelism: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(parallelism.to_le_bytes());
    // Fields go in as bytes, each text ended by a separator byte: a million rows hash in a
    // fraction of a second, where formatting them first took seconds.
    for row in rows {
        for text in [&row.service, &row.strategy]
            .into_iter()
            .chain(row.depends_on.iter())
        {
            hasher.update(text.as_bytes());
            hasher.update([0x1f]);
        }
        hasher.update(row.wave.to_le_bytes());
        for value in row.traffic_steps.iter().chain([&row.expected_minutes]) {
            hasher.update(value.to_le_bytes());
        }
        hasher.update([0x1e]);
    }
    let digest = hasher.finalize();
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("plan-{hex}")
}

/// Strategy, traffic steps and expected minutes (deployment plus bake time) by risk: below
/// `canary_above` a rolling deployment; up to `hold_above` a canary at 5, 25, 50 and 100% with
/// 10 minutes of bake per step; above it (or with no verdict at all, treated as unknown and
/// so watched) a slower canary from 1% with 20 minutes per step.
fn canary_plan(
    inputs: &PlanInputs,
    service: &str,
    deploy_minutes: f64,
) -> (&'static str, Vec<f64>, f64) {
    let (strategy, steps, bake): (&str, &[f64], f64) = match inputs.risk.get(service) {
        Some(&p) if p < inputs.canary_above => ("rolling", &[100.0], 0.0),
        Some(&p) if p < inputs.hold_above => ("canary", &[5.0, 25.0, 50.0, 100.0], 10.0),
        _ => ("canary", &[1.0, 5.0, 25.0, 50.0, 100.0], 20.0),
    };
    let bake_minutes = bake * (steps.len() as f64 - 1.0);
    (strategy, steps.to_vec(), deploy_minutes + bake_minutes)
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

/// Every cycle of the graph, one path per strongly connected component, each closed on its
/// first service.
fn cycles(graph: &DiGraph<usize, ()>, names: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for component in petgraph::algo::tarjan_scc(graph) {
        let is_cycle = component.len() > 1 || graph.contains_edge(component[0], component[0]);
        if !is_cycle {
            continue;
        }
        let members: std::collections::HashSet<NodeIndex> = component.iter().copied().collect();
        let start = *component
            .iter()
            .min_by(|a, b| names[graph[**a]].cmp(&names[graph[**b]]))
            .expect("a component has a node");
        // Breadth-first from the start back to it, inside the component: the shortest cycle.
        let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        let mut closing = None;
        'search: while let Some(node) = queue.pop_front() {
            for next in graph.neighbors(node) {
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
        let mut named: Vec<String> = path.iter().map(|n| names[graph[*n]].clone()).collect();
        named.reverse();
        found.push(named);
    }
    found.sort();
    found
}
