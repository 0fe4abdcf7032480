//! Cross-service rollout planning over the service dependency graph.
//!
//! An edge `a -> b` says `a` depends on (calls) `b`, so `b` deploys first. The plan's waves are
//! the longest-path layers of the selected services' graph (a service goes one wave after the
//! last of its dependencies), each cut to the parallelism limit. Each service gets a canary
//! stage plan by its risk, an expected duration from its past deployments, and its blast
//! radius: how many services depend on it, directly or not, in the whole graph.

use std::collections::{HashMap, VecDeque};

use anyhow::Context;
use datafusion::arrow::array::{Array, StringArray, StringBuilder};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::record_batch::RecordBatch;
use maestro_datasets::schema::{RolloutPlan, Row};
use petgraph::graph::{DiGraph, NodeIndex};
use rayon::prelude::*;

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

/// A plan: its services in deployment order, by wave and by name within a wave, held in
/// columns in that order. Every pass over a plan (its id, its table, its printed forms) reads
/// them front to back; on a million services, reading per-service values by service number
/// instead, in wave order, was a cache miss per value and most of the time.
pub struct Plan {
    pub plan_id: String,
    pub parallelism: usize,
    /// The sum of the waves' expected minutes: waves go one after the other.
    pub total_minutes: f64,
    pub critical_path_minutes: f64,
    /// Services on the longest chain of dependencies, first to deploy first.
    pub critical_path: Vec<String>,
    pub waves: Vec<Wave>,
    services: StringArray,
    /// Each service's planned dependencies, in name order: `dependencies` between the
    /// service's two offsets.
    dependency_offsets: OffsetBuffer<i32>,
    dependencies: StringArray,
    wave_of: Vec<i64>,
    stages: Vec<Stage>,
    has_history: Vec<bool>,
    risk: Vec<Option<f64>>,
    blast_radius: Vec<u32>,
    on_critical_path: Vec<bool>,
}

/// One wave: services deployed together.
#[derive(Debug, Clone)]
pub struct Wave {
    /// 1 for the first wave.
    pub wave: i64,
    /// The longest expected duration in the wave: they run side by side.
    pub expected_minutes: f64,
    /// Where its services lie in the plan's order.
    start: usize,
    end: usize,
}

impl Wave {
    /// How many services it deploys.
    pub fn len(&self) -> usize {
        self.end - self.start
    }
}

/// One service of a plan: a `rollout_plans` row without the plan id.
pub struct PlannedService<'p> {
    pub service: &'p str,
    pub wave: i64,
    /// rolling, or canary.
    pub strategy: &'static str,
    /// Traffic share of each step, in percent, ending at 100.
    pub traffic_steps: &'static [f64],
    pub expected_minutes: f64,
    pub has_history: bool,
    pub risk: Option<f64>,
    pub blast_radius: i64,
    pub is_on_critical_path: bool,
    dependencies: &'p StringArray,
    dependency_range: std::ops::Range<usize>,
}

impl<'p> PlannedService<'p> {
    /// The planned services this one depends on, in name order.
    pub fn depends_on(&self) -> impl ExactSizeIterator<Item = &'p str> + use<'p> {
        let dependencies = self.dependencies;
        self.dependency_range
            .clone()
            .map(move |j| dependencies.value(j))
    }

    /// Whether the blast radius stopped at the cap, so that it means "at least".
    pub fn blast_radius_is_capped(&self) -> bool {
        self.blast_radius as usize >= BLAST_RADIUS_CAP
    }
}

impl Plan {
    /// How many services the plan deploys.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// The planned services in deployment order.
    pub fn services(&self) -> impl ExactSizeIterator<Item = PlannedService<'_>> {
        (0..self.len()).map(|i| self.service(i))
    }

    /// The service at position `i` of the deployment order.
    pub fn service(&self, i: usize) -> PlannedService<'_> {
        let stage = &self.stages[i];
        let offsets = &self.dependency_offsets;
        PlannedService {
            service: self.services.value(i),
            wave: self.wave_of[i],
            strategy: stage.strategy,
            traffic_steps: stage.steps,
            expected_minutes: stage.minutes,
            has_history: self.has_history[i],
            risk: self.risk[i],
            blast_radius: self.blast_radius[i] as i64,
            is_on_critical_path: self.on_critical_path[i],
            dependencies: &self.dependencies,
            dependency_range: offsets[i] as usize..offsets[i + 1] as usize,
        }
    }

    /// The services of one wave, in name order.
    pub fn wave_services(&self, wave: &Wave) -> impl ExactSizeIterator<Item = &str> {
        (wave.start..wave.end).map(|i| self.services.value(i))
    }

    /// The plan as `rollout_plans` rows. The texts are the plan's own arrays, shared.
    pub fn to_batch(&self) -> anyhow::Result<RecordBatch> {
        use datafusion::arrow::array::{
            ArrayRef, BooleanArray, Float64Array, Int64Array, ListArray,
        };
        use datafusion::arrow::datatypes::DataType;
        use std::sync::Arc;

        let schema = RolloutPlan::schema();
        let item_field = |column: &str| match schema.field_with_name(column).map(|f| f.data_type())
        {
            Ok(DataType::List(item)) => Ok(item.clone()),
            _ => Err(anyhow::anyhow!(
                "rollout_plans.{column} is not declared as a list"
            )),
        };
        let steps: Vec<f64> = self
            .stages
            .iter()
            .flat_map(|stage| stage.steps.iter().copied())
            .collect();
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "plan_id",
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    &self.plan_id,
                    self.len(),
                ))),
            ),
            ("service", Arc::new(self.services.clone())),
            ("wave", Arc::new(Int64Array::from(self.wave_of.clone()))),
            (
                "depends_on",
                Arc::new(ListArray::try_new(
                    item_field("depends_on")?,
                    self.dependency_offsets.clone(),
                    Arc::new(self.dependencies.clone()),
                    None,
                )?),
            ),
            (
                "strategy",
                Arc::new(StringArray::from_iter_values(
                    self.stages.iter().map(|stage| stage.strategy),
                )),
            ),
            (
                "traffic_steps",
                Arc::new(ListArray::try_new(
                    item_field("traffic_steps")?,
                    OffsetBuffer::from_lengths(self.stages.iter().map(|stage| stage.steps.len())),
                    Arc::new(Float64Array::from(steps)),
                    None,
                )?),
            ),
            (
                "expected_minutes",
                Arc::new(Float64Array::from_iter_values(
                    self.stages.iter().map(|stage| stage.minutes),
                )),
            ),
            (
                "has_history",
                Arc::new(BooleanArray::from(self.has_history.clone())),
            ),
            ("risk", Arc::new(Float64Array::from(self.risk.clone()))),
            (
                "blast_radius",
                Arc::new(Int64Array::from_iter_values(
                    self.blast_radius.iter().map(|&r| r as i64),
                )),
            ),
            (
                "is_on_critical_path",
                Arc::new(BooleanArray::from(self.on_critical_path.clone())),
            ),
        ];
        // Matched by name, so that a column declared in another order, or a new one, cannot
        // land in the wrong place unnoticed.
        let mut by_name: HashMap<&str, ArrayRef> = columns.into_iter().collect();
        let ordered = schema
            .fields()
            .iter()
            .map(|field| {
                by_name.remove(field.name().as_str()).with_context(|| {
                    format!("rollout_plans.{} is not built by the planner", field.name())
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(
            by_name.is_empty(),
            "the planner builds columns rollout_plans does not declare"
        );
        Ok(RecordBatch::try_new(schema, ordered)?)
    }
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
    /// Every service's name, by number.
    names: StringArray,
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
        // Every mention of a service (both ends of each edge, then the named ones) is sorted by
        // name; a service's number is its rank among the distinct names. Sorting numbers and
        // orders the services at once, where a hash map to number them, then a sort of the
        // names, took twice as long on a million services. Names are compared by a key of
        // their first 16 bytes and their length, which orders names of up to 16 bytes fully,
        // so the texts are read only to tell apart longer names that share their first 16.
        let mentions: Vec<&str> = edges
            .iter()
            .flat_map(|&(from, to)| [from, to])
            .chain(more.iter().copied())
            .collect();
        let mut sorted: Vec<(NameKey, u32)> = mentions
            .par_iter()
            .enumerate()
            .map(|(i, name)| (NameKey::of(name), i as u32))
            .collect();
        let text_of = |i: u32| mentions[i as usize];
        sorted.par_sort_unstable_by(|a, b| a.0.compare(&b.0, || text_of(a.1).cmp(text_of(b.1))));
        let mut number_of_mention = vec![0u32; mentions.len()];
        let mut names = StringBuilder::new();
        let mut previous: Option<(NameKey, u32)> = None;
        let mut count = 0u32;
        for &(key, i) in &sorted {
            let is_new = previous.is_none_or(|(previous_key, previous_i)| {
                previous_key
                    .compare(&key, || text_of(previous_i).cmp(text_of(i)))
                    .is_ne()
            });
            if is_new {
                names.append_value(text_of(i));
                count += 1;
                previous = Some((key, i));
            }
            number_of_mention[i as usize] = count - 1;
        }
        drop(sorted);
        tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            "graph: numbered in name order"
        );
        let mut pairs: Vec<(u32, u32)> = (0..edges.len())
            .map(|e| (number_of_mention[2 * e], number_of_mention[2 * e + 1]))
            .collect();
        drop(number_of_mention);
        let count = count as usize;
        pairs.par_sort_unstable();
        pairs.dedup();
        let depends_on = Adjacency::new(count, &pairs);
        for pair in &mut pairs {
            *pair = (pair.1, pair.0);
        }
        pairs.par_sort_unstable();
        let dependents = Adjacency::new(count, &pairs);
        tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            "graph: adjacency"
        );
        ServiceGraph {
            names: names.finish(),
            depends_on,
            dependents,
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    fn name(&self, number: u32) -> &str {
        self.names.value(number as usize)
    }

    /// The names of the services `numbers`, in that order. The texts are copied in blocks on
    /// every core, each into its own part of one buffer: reading them in this order is a cache
    /// miss per name.
    fn names_of(&self, numbers: &[u32]) -> StringArray {
        use datafusion::arrow::buffer::Buffer;
        const BLOCK: usize = 1 << 14;
        let offsets = OffsetBuffer::<i32>::from_lengths(
            numbers
                .iter()
                .map(|&s| self.names.value_length(s as usize) as usize),
        );
        let mut values = vec![0u8; *offsets.last().expect("offsets start at 0") as usize];
        let mut blocks: Vec<(&[u32], &mut [u8])> = Vec::new();
        let mut rest = values.as_mut_slice();
        for (b, block) in numbers.chunks(BLOCK).enumerate() {
            let bytes = (offsets[b * BLOCK + block.len()] - offsets[b * BLOCK]) as usize;
            let (part, after) = rest.split_at_mut(bytes);
            blocks.push((block, part));
            rest = after;
        }
        blocks.into_par_iter().for_each(|(block, part)| {
            let mut at = 0;
            for &s in block {
                let name = self.name(s).as_bytes();
                part[at..at + name.len()].copy_from_slice(name);
                at += name.len();
            }
        });
        StringArray::new(offsets, Buffer::from_vec(values), None)
    }

    fn number_of(&self, name: &str) -> Option<u32> {
        let (mut low, mut high) = (0, self.names.len());
        while low < high {
            let mid = (low + high) / 2;
            match self.names.value(mid).cmp(name) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return Some(mid as u32),
            }
        }
        None
    }

    /// How many services reach `start` through dependencies, capped at `BLAST_RADIUS_CAP`.
    /// `known` holds the radii found so far (`UNKNOWN` where not): reaching a dependent at the
    /// cap puts `start` at it too, since everything that reaches the dependent reaches `start`
    /// (even through a cycle outside the plan, which can only take `start` itself out of the
    /// count). That settles most services of a large graph without a search.
    fn blast_radius(&self, start: u32, known: &[u32], reached: &mut Reached) -> u32 {
        let cap = BLAST_RADIUS_CAP as u32;
        let at_cap = |d: u32| known[d as usize] != UNKNOWN && known[d as usize] >= cap;
        let direct = self.dependents.of(start);
        if direct.is_empty() {
            return 0;
        }
        if direct.iter().any(|&d| at_cap(d)) {
            return cap;
        }
        // Breadth-first over dependents.
        reached.start(start);
        let mut next = 0;
        while next < reached.queue.len() {
            let node = reached.queue[next];
            next += 1;
            for &dependent in self.dependents.of(node) {
                if reached.insert(dependent)
                    && (reached.queue.len() > BLAST_RADIUS_CAP || at_cap(dependent))
                {
                    return cap;
                }
            }
        }
        reached.queue.len() as u32 - 1
    }
}

/// A radius not yet found.
const UNKNOWN: u32 = u32::MAX;

/// Layers at least this large have their blast radii found on every core.
const PARALLEL_LAYER: usize = 4096;

/// The services one blast-radius search has reached (at most `BLAST_RADIUS_CAP` + 1), in
/// search order and in a small open-addressing set that stays in cache. A slot belongs to the
/// current search only when it carries the search's stamp, so nothing is cleared between
/// searches; a flag per service of the graph, the earlier way, was a cache miss per visit.
struct Reached {
    queue: Vec<u32>,
    /// (stamp, service) per slot.
    slots: Vec<(u32, u32)>,
    stamp: u32,
}

impl Reached {
    /// Slots: a power of two, over twice the most services a search keeps.
    const SLOTS: usize = 256;

    fn new() -> Reached {
        Reached {
            queue: Vec::with_capacity(BLAST_RADIUS_CAP + 1),
            slots: vec![(0, 0); Self::SLOTS],
            stamp: 0,
        }
    }

    /// Begins a search from `start`.
    fn start(&mut self, start: u32) {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.slots.fill((0, 0));
            self.stamp = 1;
        }
        self.queue.clear();
        self.insert(start);
    }

    /// Adds a service; false when this search had reached it already.
    fn insert(&mut self, service: u32) -> bool {
        let mut slot = (service.wrapping_mul(0x9E37_79B1) >> 24) as usize;
        loop {
            let (stamp, held) = self.slots[slot];
            if stamp != self.stamp {
                self.slots[slot] = (self.stamp, service);
                self.queue.push(service);
                return true;
            }
            if held == service {
                return false;
            }
            slot = (slot + 1) % Self::SLOTS;
        }
    }
}

/// What orders names without reading them: the first 16 bytes as big-endian integers
/// (zero-padded) and the length.
#[derive(Clone, Copy, PartialEq, Eq)]
struct NameKey {
    /// The first 8 bytes, then the next 8: two words keep a sort entry at 24 bytes, where
    /// one 16-byte integer made it 48.
    prefix: [u64; 2],
    length: u32,
}

impl NameKey {
    const PREFIX_BYTES: usize = 16;

    fn of(name: &str) -> NameKey {
        let mut bytes = [0u8; Self::PREFIX_BYTES];
        let n = name.len().min(Self::PREFIX_BYTES);
        bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
        let word =
            |i: usize| u64::from_be_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        NameKey {
            prefix: [word(0), word(1)],
            length: u32::try_from(name.len()).unwrap_or(u32::MAX),
        }
    }

    /// The order of the two names, reading their texts (`by_text`) only when both are longer
    /// than the prefix and share it. With equal prefixes and one name within the prefix, that
    /// name is the start of the other (the other's next bytes match the zero padding), so the
    /// shorter comes first.
    fn compare(
        &self,
        other: &NameKey,
        by_text: impl FnOnce() -> std::cmp::Ordering,
    ) -> std::cmp::Ordering {
        self.prefix.cmp(&other.prefix).then_with(|| {
            let beyond = Self::PREFIX_BYTES as u32;
            if self.length > beyond && other.length > beyond {
                by_text()
            } else {
                self.length.cmp(&other.length)
            }
        })
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

    // History and risk by service number: the lake's maps name at most the services that
    // deployed, so they are looked up in the graph, not the graph in them.
    let by_number = |values: &HashMap<String, f64>| {
        let mut out = vec![None; count];
        for (name, &value) in values {
            if let Some(s) = graph.number_of(name) {
                out[s as usize] = Some(value);
            }
        }
        out
    };
    let history_minutes = by_number(&inputs.minutes);
    let risk = by_number(&inputs.risk);
    let fallback_minutes = median_of(inputs.minutes.values()).unwrap_or(DEFAULT_MINUTES);
    let stages: Vec<Option<Stage>> = (0..count)
        .map(|s| {
            is_selected[s].then(|| {
                canary_plan(
                    inputs,
                    risk[s],
                    history_minutes[s].unwrap_or(fallback_minutes),
                )
            })
        })
        .collect();
    let minutes_of = |s: u32| {
        stages[s as usize]
            .as_ref()
            .map_or(0.0, |stage| stage.minutes)
    };

    // Kahn's ordering over the selected services: a service is ready once every selected
    // dependency is placed. Its layer is one after its last dependency's, and the critical
    // path runs through the dependency that finishes last (the first in name order on a tie).
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
    drop(order);
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "ordered");

    let mut last: Option<u32> = None;
    for &s in &selected {
        if last.is_none_or(|l| finish[s as usize] > finish[l as usize]) {
            last = Some(s);
        }
    }
    let critical_path_minutes = last.map_or(0.0, |s| finish[s as usize]);
    let mut critical_path = Vec::new();
    while let Some(s) = last {
        critical_path.push(s);
        last = came_from[s as usize];
    }
    critical_path.reverse();

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
    let mut wave_of = vec![0u32; count];
    let mut start = 0;
    for members in &by_layer {
        for chunk in members.chunks(limit) {
            let number = waves.len() as u32 + 1;
            for &s in chunk {
                wave_of[s as usize] = number;
            }
            waves.push(Wave {
                wave: number as i64,
                expected_minutes: chunk.iter().map(|&s| minutes_of(s)).fold(0.0, f64::max),
                start,
                end: start + chunk.len(),
            });
            start += chunk.len();
        }
    }
    let total_minutes = waves.iter().map(|w| w.expected_minutes).sum();
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        waves = waves.len(),
        "waves and critical path"
    );

    // Blast radii, dependents first so that a dependent's radius is known before its
    // dependencies': a layer's dependents among the planned services are all in later layers,
    // so the services of one layer are independent and a large layer is shared out.
    let mut radius = vec![UNKNOWN; count];
    let mut reached = Reached::new();
    for members in by_layer.iter().rev() {
        if members.len() >= PARALLEL_LAYER {
            let found: Vec<u32> = members
                .par_iter()
                .map_init(Reached::new, |reached, &s| {
                    graph.blast_radius(s, &radius, reached)
                })
                .collect();
            for (&s, r) in members.iter().zip(found) {
                radius[s as usize] = r;
            }
        } else {
            for &s in members {
                radius[s as usize] = graph.blast_radius(s, &radius, &mut reached);
            }
        }
    }
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "blast radii");

    let mut on_critical_path = vec![false; count];
    for &s in &critical_path {
        on_critical_path[s as usize] = true;
    }
    // Gathered once into deployment order: every later pass reads in that order.
    let order: Vec<u32> = by_layer.into_iter().flatten().collect();
    let mut dependency_numbers = Vec::new();
    let mut dependency_counts = Vec::with_capacity(order.len());
    for &s in &order {
        let before = dependency_numbers.len();
        dependency_numbers.extend(
            graph
                .depends_on
                .of(s)
                .iter()
                .filter(|&&d| is_selected[d as usize]),
        );
        dependency_counts.push(dependency_numbers.len() - before);
    }
    let mut plan = Plan {
        plan_id: String::new(),
        parallelism: limit,
        total_minutes,
        critical_path_minutes,
        critical_path: critical_path
            .iter()
            .map(|&s| graph.name(s).to_string())
            .collect(),
        waves,
        services: graph.names_of(&order),
        dependency_offsets: OffsetBuffer::from_lengths(dependency_counts),
        dependencies: graph.names_of(&dependency_numbers),
        wave_of: order.iter().map(|&s| wave_of[s as usize] as i64).collect(),
        stages: order
            .iter()
            .map(|&s| stages[s as usize].expect("planned services have a stage"))
            .collect(),
        has_history: order
            .iter()
            .map(|&s| history_minutes[s as usize].is_some())
            .collect(),
        risk: order.iter().map(|&s| risk[s as usize]).collect(),
        blast_radius: order.iter().map(|&s| radius[s as usize]).collect(),
        on_critical_path: order
            .iter()
            .map(|&s| on_critical_path[s as usize])
            .collect(),
    };
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "gathered");
    plan.plan_id = plan_id(&plan);
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "plan id");
    Ok(plan)
}

/// The plan's id: a hash of what it says, so the same plan has the same id.
fn plan_id(plan: &Plan) -> String {
    use sha2::{Digest, Sha256};
    // Fields go in as bytes, each text ended by a separator byte, gathered in a small buffer
    // that is hashed whenever it fills: hashing field by field, or formatting the rows, took
    // seconds on a million services.
    const FILL: usize = 1 << 16;
    let mut hasher = Sha256::new();
    let mut bytes: Vec<u8> = Vec::with_capacity(FILL + 4096);
    bytes.extend(plan.parallelism.to_le_bytes());
    for row in plan.services() {
        for text in [row.service, row.strategy]
            .into_iter()
            .chain(row.depends_on())
        {
            bytes.extend(text.as_bytes());
            bytes.push(0x1f);
        }
        bytes.extend(row.wave.to_le_bytes());
        for value in row.traffic_steps.iter().chain([&row.expected_minutes]) {
            bytes.extend(value.to_le_bytes());
        }
        bytes.push(0x1e);
        if bytes.len() >= FILL {
            hasher.update(&bytes);
            bytes.clear();
        }
    }
    hasher.update(&bytes);
    let digest = hasher.finalize();
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("plan-{hex}")
}

/// How one service goes out.
#[derive(Debug, Clone, Copy)]
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
fn canary_plan(inputs: &PlanInputs, risk: Option<f64>, deploy_minutes: f64) -> Stage {
    let (strategy, steps, bake): (&'static str, &'static [f64], f64) = match risk {
        Some(p) if p < inputs.canary_above => ("rolling", &[100.0], 0.0),
        Some(p) if p < inputs.hold_above => ("canary", &[5.0, 25.0, 50.0, 100.0], 10.0),
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
    let name = |n: NodeIndex| graph.name(sub[n]).to_string();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Names that test the sort key: empty ones, NUL bytes (which equal the key's padding),
    /// names of exactly 16 bytes, longer names sharing their first 16, and non-ASCII ones.
    fn awkward_names() -> Vec<String> {
        let mut names = Vec::new();
        for head in ["", "\0", "a", "a\0", "b"] {
            for tail in ["", "\0", "z"] {
                names.push(format!("{head}{tail}"));
            }
        }
        let sixteen = "service-name-16b";
        assert_eq!(sixteen.len(), NameKey::PREFIX_BYTES);
        for tail in ["", "\0", "\0\0", "a", "ab", "b"] {
            names.push(format!("{sixteen}{tail}"));
            names.push(format!("{tail}{sixteen}"));
        }
        names.extend(["e", "é", "ü-a-long-name-beyond-sixteen-bytes"].map(String::from));
        names
    }

    #[test]
    fn name_keys_order_names_as_their_bytes_do() {
        let names = awkward_names();
        for a in &names {
            for b in &names {
                let by_key = NameKey::of(a).compare(&NameKey::of(b), || a.cmp(b));
                assert_eq!(by_key, a.cmp(b), "{a:?} against {b:?}");
            }
        }
    }

    #[test]
    fn services_are_numbered_in_name_order_and_keep_their_edges() {
        let names = awkward_names();
        let n = names.len();
        // Every edge twice, in a scrambled order.
        let edges: Vec<(&str, &str)> = (0..2 * n)
            .map(|i| (names[(i * 7) % n].as_str(), names[(i * 7 + 3) % n].as_str()))
            .collect();
        let more: Vec<&str> = names.iter().map(String::as_str).collect();
        let graph = ServiceGraph::new(&edges, &more);

        let mut expected: Vec<&str> = more.clone();
        expected.sort();
        expected.dedup();
        let numbered: Vec<&str> = (0..graph.len() as u32).map(|s| graph.name(s)).collect();
        assert_eq!(numbered, expected);
        for &(from, to) in &edges {
            let (from, to) = (graph.number_of(from).unwrap(), graph.number_of(to).unwrap());
            assert!(graph.depends_on.of(from).contains(&to));
            assert!(graph.dependents.of(to).contains(&from));
        }
        let distinct: std::collections::BTreeSet<_> = edges.iter().collect();
        assert_eq!(graph.depends_on.targets.len(), distinct.len());
    }

    #[test]
    fn a_plan_is_written_as_its_columns_and_a_foreign_batch_is_refused() {
        use maestro_datasets::Lake;
        let edges = [("web", "api"), ("api", "db"), ("batch", "db")];
        let graph = ServiceGraph::new(&edges, &[]);
        let inputs = PlanInputs {
            minutes: HashMap::from([("db".to_string(), 12.0)]),
            risk: HashMap::from([("api".to_string(), 0.9)]),
            canary_above: 0.3,
            hold_above: 0.7,
        };
        let planned = plan(&graph, &inputs, None, 10).map_err(|c| c.0).unwrap();
        let batch = planned.to_batch().unwrap();

        let folder = tempfile::tempdir().unwrap();
        let lake = Lake::open(folder.path()).unwrap();
        let mut txn = lake.begin().unwrap();
        txn.upsert_batch::<RolloutPlan>(batch.clone()).unwrap();
        txn.commit().unwrap();
        let read = lake.read_table(&RolloutPlan::TABLE).unwrap();
        let rows: usize = read.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 4);
        assert_eq!(
            read[0].column_by_name("service"),
            batch.column_by_name("service")
        );

        // Without one of its columns, the batch is not the table's.
        let short = batch.project(&[0, 1, 2]).unwrap();
        let mut txn = lake.begin().unwrap();
        assert!(txn.upsert_batch::<RolloutPlan>(short).is_err());
    }
}
