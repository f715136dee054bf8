//! A layered (Sugiyama-style) layout, top to bottom.
//!
//! 1. A depth-first search from `start` (edges in written order) marks back edges: those
//!    that close a cycle. Without them the graph is acyclic.
//! 2. Layers: the longest path from `start` over the acyclic part.
//! 3. Ranks: layer `L` is rank `2L`; the odd rank between two layers holds edge labels.
//!    A forward edge gets a dummy item in every rank it crosses; the first one carries
//!    its label, so labels take real room and never cover a node.
//! 4. Order within ranks: barycenter sweeps, down and up, keeping the order with the
//!    fewest crossings.
//! 5. X coordinates: each item is pulled toward the mean of its neighbours, then each rank
//!    is solved exactly for "as close as possible, in order, not overlapping" (a weighted
//!    isotonic regression, pool-adjacent-violators).
//! 6. Back edges run up in lanes on the right of everything they pass, so loops read as
//!    loops; self-loops go round the node's left side.
//!
//! Coordinates are pixels, origin top left. Edge paths are SVG path data built from the
//! points: straight where two points share an x or a y (with rounded corners), otherwise a
//! cubic curve with vertical tangents.

use conveyor_model::{Look, Process, Shape};
use serde::Serialize;

use crate::graph::{EdgeKind, Graph};
use crate::text::{Font, num, shorten, text_width, wrap};

/// Sizes of the node text, shared with the SVG writer.
pub(crate) mod metrics {
    /// Space inside a node's border, left and right.
    pub const PAD_X: f64 = 12.0;
    pub const PAD_TOP: f64 = 7.0;
    pub const PAD_BOTTOM: f64 = 7.0;
    pub const KIND_SIZE: f64 = 10.0;
    pub const KIND_LINE: f64 = 13.0;
    pub const ID_SIZE: f64 = 12.5;
    pub const ID_LINE: f64 = 17.0;
    pub const TITLE_SIZE: f64 = 11.0;
    pub const TITLE_LINE: f64 = 14.0;
    pub const COUNT_SIZE: f64 = 11.0;
    pub const COUNT_LINE: f64 = 16.0;
    pub const LABEL_SIZE: f64 = 10.0;
    /// Height of an edge label's box.
    pub const LABEL_HEIGHT: f64 = 14.0;
    /// Widest text inside a node.
    pub const MAX_TEXT: f64 = 230.0;
    pub const MIN_WIDTH: f64 = 120.0;
    /// How far a condition's sides point out.
    pub const HEX: f64 = 14.0;
    /// The offset of a copy_task's second sheet.
    pub const STACK: f64 = 4.0;
    /// The room a counter line needs (`9999 now · 999999 total`).
    pub const COUNT_TEXT: &str = "9999 now · 999999 total";
}

use metrics::*;

/// Room between node boxes side by side.
const NODE_GAP: f64 = 36.0;
/// Room between a node and an edge passing by.
const EDGE_GAP: f64 = 14.0;
/// Room between two edges side by side.
const LINE_GAP: f64 = 8.0;
/// Vertical room between rows, where edges bend.
const ROW_GAP: f64 = 22.0;
/// Height of a label row (odd rank).
const LABEL_ROW: f64 = LABEL_HEIGHT + 2.0;
/// Distance of the first back-edge lane from what it passes, and between lanes.
const LANE_GAP: f64 = 18.0;
/// How far a self-loop reaches out of its node.
const LOOP_OUT: f64 = 18.0;
/// Room around the drawing.
const MARGIN: f64 = 16.0;
/// Largest distance between two ports on one side of a node.
const PORT_STEP: f64 = 18.0;
/// Radius of the rounded corners of straight edge runs.
const CORNER: f64 = 8.0;

/// A point in the drawing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

/// An axis-aligned box: top-left corner and size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

impl Rect {
    pub fn right(&self) -> f64 {
        self.x + self.width
    }

    pub fn bottom(&self) -> f64 {
        self.y + self.height
    }

    pub fn center_x(&self) -> f64 {
        self.x + self.width / 2.0
    }

    pub fn center_y(&self) -> f64 {
        self.y + self.height / 2.0
    }

    /// Whether the two boxes share some area (touching edges do not count).
    pub fn overlaps(&self, other: &Rect) -> bool {
        self.x < other.right()
            && other.x < self.right()
            && self.y < other.bottom()
            && other.y < self.bottom()
    }

    fn shifted(self, dx: f64) -> Rect {
        Rect {
            x: self.x + dx,
            ..self
        }
    }
}

/// Where everything of a process graph goes. Serializes to JSON for a browser to draw.
#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    /// The process name and title.
    pub process: String,
    pub title: Option<String>,
    /// Size of the drawing.
    pub width: f64,
    pub height: f64,
    /// Whether node boxes have room for a counter line.
    pub counters: bool,
    /// Nodes in file order.
    pub nodes: Vec<NodeBox>,
    /// Edges in the order of the nodes and of `Node::edges()`.
    pub edges: Vec<EdgeRoute>,
}

/// A node's box and the text it shows.
#[derive(Debug, Clone, Serialize)]
pub struct NodeBox {
    pub id: String,
    /// The `type:` name (`api_call`, `final`, …).
    pub kind: &'static str,
    /// Its look's class: the kind, finals split by status (`final_success`).
    pub class: &'static str,
    /// How it is drawn (the kind's [`Look`]).
    #[serde(skip)]
    pub look: Look,
    pub title: Option<String>,
    /// Layer, 0 for start.
    pub layer: usize,
    /// The box (the shape fills it).
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    /// The text lines shown: kind, id, title (wrapped and shortened to fit).
    pub kind_text: String,
    pub id_text: String,
    pub title_lines: Vec<String>,
}

impl NodeBox {
    pub fn rect(&self) -> Rect {
        Rect {
            x: self.x,
            y: self.y,
            width: self.width,
            height: self.height,
        }
    }
}

/// One edge: its route and where its label goes.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeRoute {
    pub from: String,
    pub to: String,
    /// `next`, `on_error`, `else`, the branch label, `timeout 30s`.
    pub label: String,
    /// Where it is written in the node (`branches[0].next`).
    pub field: String,
    pub kind: EdgeKind,
    /// Whether it goes back up (closes a cycle), including self-loops.
    pub back: bool,
    /// The route from the source's border to the target's border.
    pub points: Vec<Point>,
    /// SVG path data of the route (curves and rounded corners).
    pub path: String,
    /// The label's box; the text starts 2 px inside it.
    pub label_box: Rect,
}

/// Lays out a process. With `counters`, node boxes keep room for a counter line.
pub fn layout(process: &Process, counters: bool) -> Layout {
    let graph = Graph::of(process);
    Builder::new(&graph, counters).run(process)
}

/// An item of a rank: a node, or a point where an edge crosses the rank.
struct Item {
    /// The node, for a node item.
    node: Option<usize>,
    rank: usize,
    /// Room taken left and right of `x`.
    left: f64,
    right: f64,
    /// Linked items in the rank above and below.
    up: Vec<usize>,
    down: Vec<usize>,
    x: f64,
}

/// How an edge is routed.
enum Route {
    /// Down through one item per rank: source node, dummies, target node.
    Forward(Vec<usize>),
    /// Up a lane on the right.
    Back,
    /// From a node to itself, round its left side.
    Loop,
}

struct Builder<'g, 'a> {
    graph: &'g Graph<'a>,
    counters: bool,
    /// Per edge: whether it closes a cycle.
    back: Vec<bool>,
    layer: Vec<usize>,
    /// Per node: box width and height, and its text.
    sizes: Vec<(f64, f64)>,
    texts: Vec<(String, String, Vec<String>)>,
    label_widths: Vec<f64>,
    items: Vec<Item>,
    ranks: Vec<Vec<usize>>,
    routes: Vec<Route>,
}

impl<'g, 'a> Builder<'g, 'a> {
    fn new(graph: &'g Graph<'a>, counters: bool) -> Self {
        Builder {
            graph,
            counters,
            back: Vec::new(),
            layer: Vec::new(),
            sizes: Vec::new(),
            texts: Vec::new(),
            label_widths: Vec::new(),
            items: Vec::new(),
            ranks: Vec::new(),
            routes: Vec::new(),
        }
    }

    fn run(mut self, process: &Process) -> Layout {
        if self.graph.nodes.is_empty() {
            return Layout {
                process: process.name.clone(),
                title: process.title.clone(),
                width: 2.0 * MARGIN,
                height: 2.0 * MARGIN,
                counters: self.counters,
                nodes: Vec::new(),
                edges: Vec::new(),
            };
        }
        self.find_back_edges_and_layers();
        self.measure();
        self.build_items();
        self.order();
        self.place_x();
        self.finish(process)
    }

    /// Steps 1 and 2: back edges by depth-first search, then longest-path layers.
    fn find_back_edges_and_layers(&mut self) {
        let n = self.graph.nodes.len();
        let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (e, edge) in self.graph.edges.iter().enumerate() {
            out[edge.from].push(e);
        }
        let mut back = vec![false; self.graph.edges.len()];
        // 0: not seen, 1: on the stack, 2: done.
        let mut state = vec![0u8; n];
        let mut postorder = Vec::with_capacity(n);
        // Start first; then any node it does not reach (none in a checked process).
        for root in std::iter::once(self.graph.start).chain(0..n) {
            if state[root] != 0 {
                continue;
            }
            state[root] = 1;
            let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
            while let Some(top) = stack.len().checked_sub(1) {
                let (v, i) = stack[top];
                if let Some(&e) = out[v].get(i) {
                    stack[top].1 += 1;
                    let w = self.graph.edges[e].to;
                    match state[w] {
                        0 => {
                            state[w] = 1;
                            stack.push((w, 0));
                        }
                        1 => back[e] = true,
                        _ => {}
                    }
                } else {
                    state[v] = 2;
                    postorder.push(v);
                    stack.pop();
                }
            }
        }
        // Reverse postorder is a topological order of the graph without back edges.
        let mut layer = vec![0usize; n];
        for &u in postorder.iter().rev() {
            for &e in &out[u] {
                if !back[e] {
                    let w = self.graph.edges[e].to;
                    layer[w] = layer[w].max(layer[u] + 1);
                }
            }
        }
        self.back = back;
        self.layer = layer;
    }

    /// Node sizes from their text; edge label widths.
    fn measure(&mut self) {
        for node in &self.graph.nodes {
            let look = node.look;
            let kind = look.label.to_string();
            let id = shorten(node.id, MAX_TEXT, ID_SIZE, Font::Mono);
            let title = match &node.node.title {
                Some(title) => wrap(title, MAX_TEXT, TITLE_SIZE, Font::Sans, 2),
                None => Vec::new(),
            };
            let mut text_w = text_width(&kind, KIND_SIZE, Font::Sans)
                .max(text_width(&id, ID_SIZE, Font::Mono))
                // Waiting kinds and escalations show an icon before the kind.
                + if look.icon.is_some() { 16.0 } else { 0.0 };
            for line in &title {
                text_w = text_w.max(text_width(line, TITLE_SIZE, Font::Sans));
            }
            if self.counters {
                text_w = text_w.max(text_width(COUNT_TEXT, COUNT_SIZE, Font::Sans));
            }
            let mut width = (text_w + 2.0 * PAD_X).max(MIN_WIDTH);
            let mut height = PAD_TOP
                + KIND_LINE
                + ID_LINE
                + TITLE_LINE * title.len() as f64
                + if self.counters { COUNT_LINE } else { 0.0 }
                + PAD_BOTTOM;
            match look.shape {
                Shape::Hexagon => width += 2.0 * HEX,
                Shape::Wait => width += 12.0,
                Shape::Pill | Shape::Subprocess => width += 16.0,
                Shape::Stack => {
                    width += STACK;
                    height += STACK;
                }
                Shape::Framed => {
                    width += 6.0;
                    height += 4.0;
                }
                Shape::Alarm | Shape::Square | Shape::Rounded | Shape::Box => {}
            }
            self.sizes.push((width.ceil(), height.ceil()));
            self.texts.push((kind, id, title));
        }
        self.label_widths = self
            .graph
            .edges
            .iter()
            .map(|e| {
                // Labels other than `next` are bold, about a tenth wider.
                let bold = if e.kind == EdgeKind::Next { 1.0 } else { 1.1 };
                text_width(&e.label, LABEL_SIZE, Font::Sans) * bold + 4.0
            })
            .collect();
    }

    /// Step 3: node items, and a chain of dummy items for every forward edge.
    fn build_items(&mut self) {
        let max_layer = self.layer.iter().copied().max().unwrap_or(0);
        self.ranks = vec![Vec::new(); 2 * max_layer + 1];
        for (i, &(w, _)) in self.sizes.iter().enumerate() {
            let rank = 2 * self.layer[i];
            self.items.push(Item {
                node: Some(i),
                rank,
                left: w / 2.0,
                right: w / 2.0,
                up: Vec::new(),
                down: Vec::new(),
                x: 0.0,
            });
            self.ranks[rank].push(i);
        }
        for (e, edge) in self.graph.edges.iter().enumerate() {
            if edge.from == edge.to {
                // Room on the node's left for the loop and its label.
                self.items[edge.from].left += LOOP_OUT + 6.0 + self.label_widths[e];
                self.routes.push(Route::Loop);
                continue;
            }
            if self.back[e] {
                self.routes.push(Route::Back);
                continue;
            }
            let (r0, r1) = (2 * self.layer[edge.from], 2 * self.layer[edge.to]);
            let mut chain = vec![edge.from];
            for rank in r0 + 1..r1 {
                let labelled = rank == r0 + 1;
                let index = self.items.len();
                self.items.push(Item {
                    node: None,
                    rank,
                    left: 2.0,
                    right: if labelled {
                        5.0 + self.label_widths[e]
                    } else {
                        2.0
                    },
                    up: Vec::new(),
                    down: Vec::new(),
                    x: 0.0,
                });
                self.ranks[rank].push(index);
                chain.push(index);
            }
            chain.push(edge.to);
            for pair in chain.windows(2) {
                self.items[pair[0]].down.push(pair[1]);
                self.items[pair[1]].up.push(pair[0]);
            }
            self.routes.push(Route::Forward(chain));
        }
    }

    /// Step 4: barycenter sweeps; keeps the order with the fewest crossings.
    fn order(&mut self) {
        let mut pos = vec![0usize; self.items.len()];
        let mut best = self.ranks.clone();
        let mut best_crossings = usize::MAX;
        for round in 0..8 {
            let down = round % 2 == 0;
            let rank_count = self.ranks.len();
            let sequence: Vec<usize> = if down {
                (1..rank_count).collect()
            } else {
                (0..rank_count.saturating_sub(1)).rev().collect()
            };
            set_positions(&self.ranks, &mut pos);
            for r in sequence {
                let mut keyed: Vec<(f64, usize)> = self.ranks[r]
                    .iter()
                    .enumerate()
                    .map(|(i, &item)| {
                        let neighbours = if down {
                            &self.items[item].up
                        } else {
                            &self.items[item].down
                        };
                        let key = if neighbours.is_empty() {
                            i as f64
                        } else {
                            neighbours.iter().map(|&n| pos[n] as f64).sum::<f64>()
                                / neighbours.len() as f64
                        };
                        (key, item)
                    })
                    .collect();
                // Stable: equal keys keep their order (branches stay in written order).
                keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
                self.ranks[r] = keyed.into_iter().map(|(_, item)| item).collect();
                for (i, &item) in self.ranks[r].iter().enumerate() {
                    pos[item] = i;
                }
            }
            let crossings = self.crossings(&pos);
            if crossings < best_crossings {
                best_crossings = crossings;
                best = self.ranks.clone();
            }
            if crossings == 0 {
                break;
            }
        }
        self.ranks = best;
    }

    /// Edge crossings between all pairs of neighbouring ranks.
    fn crossings(&self, pos: &[usize]) -> usize {
        let mut total = 0;
        for r in 0..self.ranks.len().saturating_sub(1) {
            let mut links: Vec<(usize, usize)> = Vec::new();
            for &a in &self.ranks[r] {
                for &b in &self.items[a].down {
                    links.push((pos[a], pos[b]));
                }
            }
            links.sort_unstable();
            // Count pairs (i < j) with lower end of i right of lower end of j: a Fenwick
            // tree over positions in the rank below.
            let size = self.ranks[r + 1].len() + 1;
            let mut tree = vec![0usize; size + 1];
            for (seen, &(_, b)) in links.iter().enumerate() {
                // How many earlier links end at or left of b.
                let mut at_or_left = 0;
                let mut i = b + 1;
                while i > 0 {
                    at_or_left += tree[i];
                    i -= i & i.wrapping_neg();
                }
                total += seen - at_or_left;
                let mut i = b + 1;
                while i <= size {
                    tree[i] += 1;
                    i += i & i.wrapping_neg();
                }
            }
        }
        total
    }

    /// Step 5: x coordinates.
    fn place_x(&mut self) {
        // Start packed, each rank centred on 0.
        for r in 0..self.ranks.len() {
            let offsets = self.offsets(r);
            let half = offsets.last().copied().unwrap_or(0.0) / 2.0;
            for (i, &item) in self.ranks[r].iter().enumerate() {
                self.items[item].x = offsets[i] - half;
            }
        }
        let rank_count = self.ranks.len();
        for _ in 0..10 {
            for r in 1..rank_count {
                self.place_rank(r, true, false);
            }
            for r in (0..rank_count.saturating_sub(1)).rev() {
                self.place_rank(r, false, true);
            }
        }
        for r in 0..rank_count {
            self.place_rank(r, true, true);
        }
        for _ in 0..2 {
            self.straighten();
        }
    }

    /// Makes long edges straight where there is room: the dummies of a chain are moved,
    /// each within the room its rank leaves it, to one common x per run of dummies.
    fn straighten(&mut self) {
        // Where each item is in its rank, for its neighbours.
        let mut pos = vec![0usize; self.items.len()];
        set_positions(&self.ranks, &mut pos);
        for e in 0..self.routes.len() {
            let Route::Forward(chain) = &self.routes[e] else {
                continue;
            };
            let dummies: Vec<usize> = chain[1..chain.len() - 1].to_vec();
            // The current run: its members and the room they share.
            let mut run: Vec<usize> = Vec::new();
            let (mut lo, mut hi) = (f64::NEG_INFINITY, f64::INFINITY);
            for &d in &dummies {
                let (d_lo, d_hi) = self.room(d, pos[d]);
                if run.is_empty() || (lo.max(d_lo) <= hi.min(d_hi)) {
                    lo = lo.max(d_lo);
                    hi = hi.min(d_hi);
                    run.push(d);
                    continue;
                }
                self.align(&run, lo, hi);
                run = vec![d];
                (lo, hi) = (d_lo, d_hi);
            }
            self.align(&run, lo, hi);
        }
    }

    /// How far item `item` (at index `i` of its rank) can move without touching its
    /// neighbours in the rank.
    fn room(&self, item: usize, i: usize) -> (f64, f64) {
        let it = &self.items[item];
        let rank = &self.ranks[it.rank];
        let lo = match i.checked_sub(1).map(|j| &self.items[rank[j]]) {
            Some(prev) => prev.x + prev.right + gap(prev, it) + it.left,
            None => f64::NEG_INFINITY,
        };
        let hi = match rank.get(i + 1).map(|&j| &self.items[j]) {
            Some(next) => next.x - next.left - gap(it, next) - it.right,
            None => f64::INFINITY,
        };
        (lo, hi)
    }

    /// Puts every item of `run` at one x in `[lo, hi]`, nearest their mean.
    fn align(&mut self, run: &[usize], lo: f64, hi: f64) {
        if run.is_empty() || lo > hi {
            return;
        }
        let mean = run.iter().map(|&d| self.items[d].x).sum::<f64>() / run.len() as f64;
        // (Not `clamp`, which panics on odd bounds.)
        let x = mean.max(lo).min(hi);
        for &d in run {
            self.items[d].x = x;
        }
    }

    /// Where each item of rank `r` would be if packed tight from 0.
    fn offsets(&self, r: usize) -> Vec<f64> {
        let mut offsets = Vec::with_capacity(self.ranks[r].len());
        let mut x = 0.0;
        for (i, &item) in self.ranks[r].iter().enumerate() {
            if i > 0 {
                let prev = &self.items[self.ranks[r][i - 1]];
                let this = &self.items[item];
                x += prev.right + gap(prev, this) + this.left;
            }
            offsets.push(x);
        }
        offsets
    }

    /// Moves the items of rank `r` as close as possible to the mean x of their neighbours
    /// above (`up`) and/or below (`down`), keeping their order and spacing.
    fn place_rank(&mut self, r: usize, up: bool, down: bool) {
        let offsets = self.offsets(r);
        let mut targets = Vec::with_capacity(offsets.len());
        for (i, &item) in self.ranks[r].iter().enumerate() {
            let it = &self.items[item];
            let mut sum = 0.0;
            let mut count = 0usize;
            if up {
                sum += it.up.iter().map(|&n| self.items[n].x).sum::<f64>();
                count += it.up.len();
            }
            if down {
                sum += it.down.iter().map(|&n| self.items[n].x).sum::<f64>();
                count += it.down.len();
            }
            let desired = if count == 0 { it.x } else { sum / count as f64 };
            // Edge points weigh more than nodes: long edges stay straight.
            let weight = if it.node.is_some() { 1.0 } else { 2.0 };
            targets.push((desired - offsets[i], weight));
        }
        let solved = isotonic(&targets);
        for (i, &item) in self.ranks[r].iter().enumerate() {
            self.items[item].x = solved[i] + offsets[i];
        }
    }

    /// Step 6 and the output: rows, lanes, ports, paths.
    fn finish(self, process: &Process) -> Layout {
        let rank_count = self.ranks.len();
        // Row heights and tops.
        let mut row_height = vec![0.0f64; rank_count];
        for (i, &(_, h)) in self.sizes.iter().enumerate() {
            let r = 2 * self.layer[i];
            row_height[r] = row_height[r].max(h);
        }
        for (r, height) in row_height.iter_mut().enumerate() {
            if r % 2 == 1 {
                *height = LABEL_ROW;
            }
        }
        let mut row_top = vec![0.0f64; rank_count];
        let mut y = MARGIN;
        for r in 0..rank_count {
            row_top[r] = y;
            y += row_height[r] + ROW_GAP;
        }
        let height = y - ROW_GAP + MARGIN;
        let row_bottom = |r: usize| row_top[r] + row_height[r];
        let row_mid = |r: usize| row_top[r] + row_height[r] / 2.0;

        // Node boxes, vertically centred in their row.
        let rects: Vec<Rect> = self
            .sizes
            .iter()
            .enumerate()
            .map(|(i, &(w, h))| {
                let r = 2 * self.layer[i];
                Rect {
                    x: self.items[i].x - w / 2.0,
                    y: row_top[r] + (row_height[r] - h) / 2.0,
                    width: w,
                    height: h,
                }
            })
            .collect();

        // How far right each rank is taken, for the back-edge lanes.
        let mut taken = vec![f64::NEG_INFINITY; rank_count];
        for item in &self.items {
            taken[item.rank] = taken[item.rank].max(item.x + item.right);
        }
        // Which node is the last in its rank, so a back edge may leave or enter it from
        // the right side without crossing another node.
        let mut last_in_rank = vec![false; self.graph.nodes.len()];
        for rank in &self.ranks {
            if let Some(&last) = rank.iter().rev().find(|&&i| self.items[i].node.is_some()) {
                last_in_rank[last] = true;
            }
        }
        // Lanes: shorter back edges first, so they take the places nearer the graph. A
        // lane takes the first place right of the graph (in its ranks) that keeps
        // LANE_GAP from every lane and label already placed in those ranks, so lanes
        // whose ranks do not meet share a column instead of stepping ever further out.
        let mut back_edges: Vec<usize> = (0..self.graph.edges.len())
            .filter(|&e| matches!(self.routes[e], Route::Back))
            .collect();
        back_edges.sort_by_key(|&e| {
            let edge = &self.graph.edges[e];
            (self.layer[edge.from] - self.layer[edge.to], e)
        });
        let mut lane = vec![0.0f64; self.graph.edges.len()];
        // Per rank: x ranges taken by lanes and their labels.
        let mut used: Vec<Vec<(f64, f64)>> = vec![Vec::new(); rank_count];
        for &e in &back_edges {
            let edge = &self.graph.edges[e];
            let (top, bottom) = (2 * self.layer[edge.to], 2 * self.layer[edge.from]);
            let label_rank = bottom - 1;
            let label_end = 5.0 + self.label_widths[e];
            let mut x = taken[top..=bottom]
                .iter()
                .fold(f64::NEG_INFINITY, |a, &b| a.max(b))
                + LANE_GAP;
            // Move right past every conflict until none is left; each move passes the
            // end of some placed range, so this ends.
            loop {
                let mut moved = false;
                for (r, ranges) in used.iter().enumerate().take(bottom + 1).skip(top) {
                    for &(a, b) in ranges {
                        let end = if r == label_rank { x + label_end } else { x };
                        if x < b + LANE_GAP && end > a - LANE_GAP {
                            x = b + LANE_GAP;
                            moved = true;
                        }
                    }
                }
                if !moved {
                    break;
                }
            }
            for (r, ranges) in used.iter_mut().enumerate().take(bottom + 1).skip(top) {
                let end = if r == label_rank { x + label_end } else { x };
                ranges.push((x, end));
            }
            lane[e] = x;
        }

        // Ports: where edges meet node borders, spread along each side.
        let n = self.graph.nodes.len();
        let mut tops: Vec<Vec<(f64, usize, bool)>> = vec![Vec::new(); n];
        let mut bottoms: Vec<Vec<(f64, usize, bool)>> = vec![Vec::new(); n];
        let mut right_out: Vec<Vec<(f64, usize)>> = vec![Vec::new(); n];
        let mut right_in: Vec<Vec<(f64, usize)>> = vec![Vec::new(); n];
        let mut loops: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (e, edge) in self.graph.edges.iter().enumerate() {
            match &self.routes[e] {
                Route::Forward(chain) => {
                    let after = self.items[chain[1]].x;
                    let before = self.items[chain[chain.len() - 2]].x;
                    bottoms[edge.from].push((after, e, true));
                    tops[edge.to].push((before, e, false));
                }
                Route::Back => {
                    if last_in_rank[edge.from] {
                        right_out[edge.from].push((lane[e], e));
                    } else {
                        tops[edge.from].push((lane[e], e, true));
                    }
                    if last_in_rank[edge.to] {
                        right_in[edge.to].push((lane[e], e));
                    } else {
                        bottoms[edge.to].push((lane[e], e, false));
                    }
                }
                Route::Loop => loops[edge.from].push(e),
            }
        }
        let edge_count = self.graph.edges.len();
        let mut start_port = vec![Point { x: 0.0, y: 0.0 }; edge_count];
        let mut end_port = vec![Point { x: 0.0, y: 0.0 }; edge_count];
        for v in 0..n {
            let rect = rects[v];
            let shape = self.graph.nodes[v].look.shape;
            let inset = if shape == Shape::Hexagon {
                HEX + 6.0
            } else {
                10.0
            };
            for (side, y) in [(&mut tops[v], rect.y), (&mut bottoms[v], rect.bottom())] {
                side.sort_by(|a, b| a.0.total_cmp(&b.0));
                let xs = spread(side.len(), rect.center_x(), rect.width - 2.0 * inset);
                for (&(_, e, is_start), x) in side.iter().zip(xs) {
                    let p = Point { x, y };
                    if is_start {
                        start_port[e] = p;
                    } else {
                        end_port[e] = p;
                    }
                }
            }
            // Right side: edges leaving to inner lanes leave higher; entering edges below.
            right_out[v].sort_by(|a, b| a.0.total_cmp(&b.0));
            right_in[v].sort_by(|a, b| b.0.total_cmp(&a.0));
            let count = right_out[v].len() + right_in[v].len();
            let ys = spread(count, rect.center_y(), rect.height - 16.0);
            for (k, y) in ys.into_iter().enumerate() {
                let x = border_right(shape, rect, y);
                if let Some(&(_, e)) = right_out[v].get(k) {
                    start_port[e] = Point { x, y };
                } else if let Some(&(_, e)) = right_in[v].get(k - right_out[v].len()) {
                    end_port[e] = Point { x, y };
                }
            }
        }

        // Routes.
        let mut edges = Vec::with_capacity(edge_count);
        for (e, edge) in self.graph.edges.iter().enumerate() {
            let label_w = self.label_widths[e];
            let (points, label_box) = match &self.routes[e] {
                Route::Forward(chain) => {
                    let mut points = vec![start_port[e]];
                    for &d in &chain[1..chain.len() - 1] {
                        let item = &self.items[d];
                        points.push(Point {
                            x: item.x,
                            y: row_top[item.rank],
                        });
                        points.push(Point {
                            x: item.x,
                            y: row_bottom(item.rank),
                        });
                    }
                    points.push(end_port[e]);
                    let first = &self.items[chain[1]];
                    let label_box = Rect {
                        x: first.x + 4.0,
                        y: row_mid(first.rank) - LABEL_HEIGHT / 2.0,
                        width: label_w,
                        height: LABEL_HEIGHT,
                    };
                    (points, label_box)
                }
                Route::Back => {
                    let (top, bottom) = (2 * self.layer[edge.to], 2 * self.layer[edge.from]);
                    let x = lane[e];
                    let (s, t) = (start_port[e], end_port[e]);
                    let mut points = vec![s];
                    if last_in_rank[edge.from] {
                        points.push(Point { x, y: s.y });
                    } else {
                        points.push(Point {
                            x,
                            y: row_bottom(bottom - 1),
                        });
                    }
                    if last_in_rank[edge.to] {
                        points.push(Point { x, y: t.y });
                    } else {
                        points.push(Point {
                            x,
                            y: row_top[top + 1],
                        });
                    }
                    points.push(t);
                    let label_box = Rect {
                        x: x + 4.0,
                        y: row_mid(bottom - 1) - LABEL_HEIGHT / 2.0,
                        width: label_w,
                        height: LABEL_HEIGHT,
                    };
                    (points, label_box)
                }
                Route::Loop => {
                    let rect = rects[edge.from];
                    let shape = self.graph.nodes[edge.from].look.shape;
                    let k = loops[edge.from].iter().position(|&l| l == e).unwrap_or(0);
                    let reach = LOOP_OUT + 8.0 * k as f64;
                    let y0 = rect.center_y() - 9.0 - 3.0 * k as f64;
                    let y1 = rect.center_y() + 9.0 + 3.0 * k as f64;
                    let out_x = rect.x - reach;
                    let points = vec![
                        Point {
                            x: border_left(shape, rect, y0),
                            y: y0,
                        },
                        Point { x: out_x, y: y0 },
                        Point { x: out_x, y: y1 },
                        Point {
                            x: border_left(shape, rect, y1),
                            y: y1,
                        },
                    ];
                    let label_box = Rect {
                        x: out_x - 4.0 - label_w,
                        y: rect.center_y() - LABEL_HEIGHT / 2.0 + LABEL_HEIGHT * k as f64,
                        width: label_w,
                        height: LABEL_HEIGHT,
                    };
                    (points, label_box)
                }
            };
            edges.push(EdgeRoute {
                from: self.graph.nodes[edge.from].id.to_string(),
                to: self.graph.nodes[edge.to].id.to_string(),
                label: edge.label.clone(),
                field: edge.field.clone(),
                kind: edge.kind,
                back: !matches!(self.routes[e], Route::Forward(_)),
                path: String::new(),
                points,
                label_box,
            });
        }

        // Shift everything right so the leftmost thing is at the margin.
        let mut min_x = f64::INFINITY;
        let mut max_x = f64::NEG_INFINITY;
        for rect in &rects {
            min_x = min_x.min(rect.x);
            max_x = max_x.max(rect.right());
        }
        for edge in &edges {
            for p in &edge.points {
                min_x = min_x.min(p.x);
                max_x = max_x.max(p.x);
            }
            min_x = min_x.min(edge.label_box.x);
            max_x = max_x.max(edge.label_box.right());
        }
        let dx = MARGIN - min_x;
        for edge in &mut edges {
            for p in &mut edge.points {
                p.x += dx;
            }
            edge.label_box = edge.label_box.shifted(dx);
            edge.path = path_data(&edge.points);
        }
        let nodes = self
            .graph
            .nodes
            .iter()
            .zip(rects)
            .zip(self.texts)
            .enumerate()
            .map(|(i, ((node, rect), (kind_text, id_text, title_lines)))| {
                let rect = rect.shifted(dx);
                NodeBox {
                    id: node.id.to_string(),
                    kind: node.node.kind.name(),
                    class: node.look.class,
                    look: node.look,
                    title: node.node.title.clone(),
                    layer: self.layer[i],
                    x: rect.x,
                    y: rect.y,
                    width: rect.width,
                    height: rect.height,
                    kind_text,
                    id_text,
                    title_lines,
                }
            })
            .collect();
        Layout {
            process: process.name.clone(),
            title: process.title.clone(),
            width: (max_x - min_x + 2.0 * MARGIN).ceil(),
            height: height.ceil(),
            counters: self.counters,
            nodes,
            edges,
        }
    }
}

/// Room between two items side by side in a rank.
fn gap(a: &Item, b: &Item) -> f64 {
    match (a.node.is_some(), b.node.is_some()) {
        (true, true) => NODE_GAP,
        (false, false) => LINE_GAP,
        _ => EDGE_GAP,
    }
}

/// Sets `pos[item]` to the item's index in its rank.
fn set_positions(ranks: &[Vec<usize>], pos: &mut [usize]) {
    for rank in ranks {
        for (i, &item) in rank.iter().enumerate() {
            pos[item] = i;
        }
    }
}

/// Weighted isotonic regression (pool adjacent violators): the non-decreasing sequence
/// closest to `targets` (value, weight) in weighted squared distance.
fn isotonic(targets: &[(f64, f64)]) -> Vec<f64> {
    // Blocks of pooled values: (weighted mean, total weight, count).
    let mut blocks: Vec<(f64, f64, usize)> = Vec::with_capacity(targets.len());
    for &(value, weight) in targets {
        let mut block = (value, weight, 1usize);
        while let Some(&(mean, w, count)) = blocks.last() {
            if mean <= block.0 {
                break;
            }
            blocks.pop();
            let total = w + block.1;
            block = (
                (mean * w + block.0 * block.1) / total,
                total,
                count + block.2,
            );
        }
        blocks.push(block);
    }
    let mut out = Vec::with_capacity(targets.len());
    for (mean, _, count) in blocks {
        out.extend(std::iter::repeat_n(mean, count));
    }
    out
}

/// `count` positions centred on `center`, at most `PORT_STEP` apart, within `length`.
fn spread(count: usize, center: f64, length: f64) -> Vec<f64> {
    if count == 0 {
        return Vec::new();
    }
    let step = PORT_STEP.min(length.max(0.0) / count as f64);
    let first = center - step * (count as f64 - 1.0) / 2.0;
    (0..count).map(|i| first + step * i as f64).collect()
}

/// The x of a node's right border at height `y` (shapes with slanted or round sides).
pub(crate) fn border_right(shape: Shape, rect: Rect, y: f64) -> f64 {
    let dy = (y - rect.center_y()).abs();
    let half = rect.height / 2.0;
    match shape {
        Shape::Hexagon => rect.right() - HEX * (dy / half).min(1.0),
        Shape::Wait | Shape::Pill => {
            let r = round_radius(shape, rect);
            rect.right() - r + round_offset(r, dy - (half - r))
        }
        Shape::Stack => rect.right() - STACK,
        _ => rect.right(),
    }
}

/// The x of a node's left border at height `y`.
pub(crate) fn border_left(shape: Shape, rect: Rect, y: f64) -> f64 {
    let dy = (y - rect.center_y()).abs();
    let half = rect.height / 2.0;
    match shape {
        Shape::Hexagon => rect.x + HEX * (dy / half).min(1.0),
        Shape::Pill => {
            let r = round_radius(shape, rect);
            rect.x + r - round_offset(r, dy - (half - r))
        }
        _ => rect.x,
    }
}

/// Radius of the round ends of start (both) and waiting nodes (right).
pub(crate) fn round_radius(shape: Shape, rect: Rect) -> f64 {
    match shape {
        Shape::Pill => rect.height / 2.0,
        _ => (rect.height / 2.0).min(22.0),
    }
}

/// How far a circle of radius `r` reaches sideways at `d` above or below its centre
/// (the full radius when `d` is not positive).
fn round_offset(r: f64, d: f64) -> f64 {
    if d <= 0.0 {
        r
    } else {
        (r * r - d * d).max(0.0).sqrt()
    }
}

/// SVG path data through `points`: straight runs (same x or same y) as lines with rounded
/// corners, anything else as a curve leaving and arriving vertically.
pub(crate) fn path_data(points: &[Point]) -> String {
    let Some(first) = points.first() else {
        return String::new();
    };
    let straight = |a: Point, b: Point| (a.x - b.x).abs() < 0.5 || (a.y - b.y).abs() < 0.5;
    let mut d = format!("M{},{}", num(first.x), num(first.y));
    for i in 1..points.len() {
        let (a, b) = (points[i - 1], points[i]);
        if straight(a, b) {
            // Round the corner into the next run when it turns.
            if let Some(&c) = points.get(i + 1)
                && straight(b, c)
                && turns(a, b, c)
            {
                let r = CORNER.min(dist(a, b) / 2.0).min(dist(b, c) / 2.0);
                let before = toward(b, a, r);
                let after = toward(b, c, r);
                d.push_str(&format!(
                    " L{},{} Q{},{} {},{}",
                    num(before.x),
                    num(before.y),
                    num(b.x),
                    num(b.y),
                    num(after.x),
                    num(after.y)
                ));
            } else {
                d.push_str(&format!(" L{},{}", num(b.x), num(b.y)));
            }
        } else {
            let mid = (a.y + b.y) / 2.0;
            d.push_str(&format!(
                " C{},{} {},{} {},{}",
                num(a.x),
                num(mid),
                num(b.x),
                num(mid),
                num(b.x),
                num(b.y)
            ));
        }
    }
    d
}

/// Whether a→b→c changes direction (not a straight continuation).
fn turns(a: Point, b: Point, c: Point) -> bool {
    let horizontal_ab = (a.y - b.y).abs() < 0.5;
    let horizontal_bc = (b.y - c.y).abs() < 0.5;
    horizontal_ab != horizontal_bc && dist(a, b) > 0.5 && dist(b, c) > 0.5
}

fn dist(a: Point, b: Point) -> f64 {
    ((a.x - b.x).powi(2) + (a.y - b.y).powi(2)).sqrt()
}

/// The point `r` from `from` toward `to`.
fn toward(from: Point, to: Point, r: f64) -> Point {
    let d = dist(from, to);
    if d < f64::EPSILON {
        return from;
    }
    Point {
        x: from.x + (to.x - from.x) * r / d,
        y: from.y + (to.y - from.y) * r / d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isotonic_pools_violators() {
        let out = isotonic(&[(1.0, 1.0), (3.0, 1.0), (2.0, 1.0), (4.0, 1.0)]);
        assert_eq!(out, vec![1.0, 2.5, 2.5, 4.0]);
        let weighted = isotonic(&[(3.0, 3.0), (1.0, 1.0)]);
        assert_eq!(weighted, vec![2.5, 2.5]);
    }

    #[test]
    fn spread_centres_ports() {
        assert_eq!(spread(1, 50.0, 100.0), vec![50.0]);
        assert_eq!(spread(3, 50.0, 100.0), vec![32.0, 50.0, 68.0]);
        assert!(spread(0, 50.0, 100.0).is_empty());
    }

    #[test]
    fn paths_round_corners_and_curve_diagonals() {
        let straight = path_data(&[
            Point { x: 0.0, y: 50.0 },
            Point { x: 40.0, y: 50.0 },
            Point { x: 40.0, y: 0.0 },
        ]);
        assert_eq!(straight, "M0,50 L32,50 Q40,50 40,42 L40,0");
        let curve = path_data(&[Point { x: 0.0, y: 0.0 }, Point { x: 20.0, y: 40.0 }]);
        assert_eq!(curve, "M0,0 C0,20 20,20 20,40");
    }
}
