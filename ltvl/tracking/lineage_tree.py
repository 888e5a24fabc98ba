"""``ltvl lineage``: walk a mask's ancestry back through MLflow to the dense run it came from.

A round run names its mask and its parent (``ltvl.parent_sha256``: the mask it was pruned from,
or for a transferred/baseline ticket the source chain's mask). Following parents within the
chain, then across to the source chain, ends at round 0, whose ``ltvl.dense_run_id`` is the root.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltvl.util.errors import LtvlError


@dataclass
class Ancestor:
    run_id: str
    run_name: str
    kind: str  # round | dense
    mask_sha256: str
    round: int | None
    sparsity: float | None
    metric: float | None
    task: str
    source_task: str | None
    chain_key: str | None
    init: str = ""


def _client(uri: str):
    from ltvl.tracking.reach import tracking_client
    return tracking_client(uri)


def _ancestor(run) -> Ancestor:
    t, m = run.data.tags, run.data.metrics
    return Ancestor(run.info.run_id, run.info.run_name, t.get("ltvl.kind", "?"), t.get("ltvl.mask_sha256", ""),
                    int(t["ltvl.round"]) if "ltvl.round" in t else None, m.get("sparsity"), m.get("metric"),
                    t.get("ltvl.task", "?"), t.get("ltvl.source_task"), t.get("ltvl.chain_key"), t.get("ltvl.init", ""))


def _search(client, flt: str) -> list:
    exps = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(exps, filter_string=flt, max_results=50)) if exps else []


def find_start(uri: str, ref: str):
    """A round run from a mask sha256 (or a unique prefix of ≥ 8 hex digits) or any run id."""
    client = _client(uri)
    try:
        run = client.get_run(ref)
        if run.data.tags.get("ltvl.kind") == "round":
            return run
        rounds = _search(client, f"tags.`ltvl.chain_key` = '{run.data.tags.get('ltvl.key', '')}'")
        if rounds:  # a chain run: start from its last round
            return max(rounds, key=lambda r: int(r.data.tags["ltvl.round"]))
        raise LtvlError(f"run {ref} has no rounds", where="MASK_SHA_OR_RUN", fix="pass a round run or a mask sha256")
    except LtvlError:
        raise
    except Exception:  # noqa: BLE001 - not a run id: try it as a mask hash
        pass
    if len(ref) < 8:
        raise LtvlError(f"{ref!r} is too short to identify a mask", where="MASK_SHA_OR_RUN",
                        fix="give at least 8 hex digits of the sha256, or a run id")
    runs = _search(client, f"tags.`ltvl.mask_sha256` LIKE '{ref}%' AND tags.`ltvl.kind` = 'round'")
    if not runs:
        raise LtvlError(f"no round run has mask {ref}", where="MASK_SHA_OR_RUN",
                        fix="check the sha256 (`ltvl mask info FILE`) and --tracking-uri")
    # a shared first mask belongs to several chains: prefer a chain's own round over a ticket's
    return sorted(runs, key=lambda r: (r.data.tags.get("ltvl.chain_key", "").startswith("ticket"),
                                       r.info.start_time))[0]


def ancestry(uri: str, ref: str) -> list[Ancestor]:
    """From the given mask back to the dense run: [the mask, its parent, …, round 0, dense]."""
    client = _client(uri)
    run = find_start(uri, ref)
    chain: list[Ancestor] = []
    seen = set()
    while run is not None and run.info.run_id not in seen:
        seen.add(run.info.run_id)
        node = _ancestor(run)
        chain.append(node)
        tags = run.data.tags
        if node.round == 0 and not tags.get("ltvl.source_mask_sha256"):
            dense_id = tags.get("ltvl.dense_run_id")
            if dense_id:
                d = client.get_run(dense_id)
                chain.append(Ancestor(d.info.run_id, d.info.run_name, "dense", "", None, 0.0,
                                      d.data.metrics.get("metric"), d.data.tags.get("ltvl.task", "?"), None, None))
            break
        parent = tags.get("ltvl.parent_sha256")
        if not parent:
            break
        cands = [] if tags.get("ltvl.source_mask_sha256") else \
            _search(client, f"tags.`ltvl.mask_sha256` = '{parent}' AND "
                            f"tags.`ltvl.chain_key` = '{tags.get('ltvl.chain_key', '')}'")
        if not cands:  # a ticket, or a chain on another seed's masks (masks_of_seed): cross over to that chain
            cands = _search(client, f"tags.`ltvl.mask_sha256` = '{parent}' AND tags.`ltvl.kind` = 'round'")
            cands = [c for c in cands if c.data.tags.get("ltvl.chain_key", "").startswith("chain:")]
        run = cands[0] if cands else None
    return chain


def print_tree(nodes: list[Ancestor], console) -> None:
    from rich.tree import Tree
    if not nodes:
        return
    root = None
    branch = None
    for n in reversed(nodes):  # the dense run at the root, the asked-for mask at the leaf
        if n.kind == "dense":
            label = f"[bold]dense run[/] {n.run_name}  task {n.task}  metric {_f(n.metric)}  run {n.run_id}"
        else:
            src = f"  source task {n.source_task}" if n.source_task else ""
            label = (f"mask {n.mask_sha256[:16]}  round {n.round}  sparsity {_p(n.sparsity)}  metric {_f(n.metric)}"
                     f"  task {n.task}  init {n.init}{src}  run {n.run_id}")
        if root is None:
            root = branch = Tree(label)
        else:
            branch = branch.add(label)
    console.print(root)


def _f(x) -> str:
    return "—" if x is None else f"{x:.4f}"


def _p(x) -> str:
    return "—" if x is None else f"{x:.1%}"
