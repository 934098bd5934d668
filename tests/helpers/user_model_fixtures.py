"""Tiny hand-made `user_sequences` + `vocabularies` Delta tables in the contract schemas (written with the
`deltalake` package, no Spark needed) for the user-model tests and benchmarks, plus in-memory chunks of the same
rows and the one-thread fixture of the model tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ubp.tables import CODE_VALUES, FIRST_TOKEN_ID, PAD_ID, QUERY_CODES, USER_SEQUENCES, VOCABULARIES

AS_OF = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
VOCAB = "v-test"
SIZES = {"event_type": 9, "sku": 40, "category": 8, "price": 10, "url": 30, "query": 32, "day": 60, "week": 12}


def make_sequences(n_users: int, seed: int = 0, min_len: int = 1, max_len: int = 12, zipf: float | None = None,
                   first_client: int = 1000, vocab: str = VOCAB) -> pa.Table:
    """Random but internally consistent users: product events have sku/category/price and the sku's 16 name codes
    (`name_tokens`), visits a url, searches 16 query codes; day increases along the sequence. `zipf` draws lengths
    from a Zipf law (clipped to max_len)."""
    rng = np.random.default_rng(seed)
    if zipf:
        lens = np.clip(rng.zipf(zipf, n_users), min_len, max_len)
    else:
        lens = rng.integers(min_len, max_len + 1, n_users)
    rows: dict[str, list] = {c: [] for c in USER_SEQUENCES.column_names}
    t0 = int(AS_OF.timestamp()) - 50 * 86400
    for u in range(n_users):
        n = int(lens[u])
        et = rng.integers(0, 5, n)  # raw codes 0..4
        is_prod, is_visit, is_search = et <= 2, et == 3, et == 4
        sku = np.where(is_prod, rng.integers(FIRST_TOKEN_ID, SIZES["sku"], n), PAD_ID)
        cat = np.where(is_prod, FIRST_TOKEN_ID + sku % (SIZES["category"] - FIRST_TOKEN_ID), PAD_ID)
        price = np.where(is_prod, FIRST_TOKEN_ID + sku % (SIZES["price"] - FIRST_TOKEN_ID), PAD_ID)
        url = np.where(is_visit, rng.integers(FIRST_TOKEN_ID, SIZES["url"], n), PAD_ID)
        q = rng.integers(FIRST_TOKEN_ID, SIZES["query"], (n, QUERY_CODES)) * is_search[:, None]
        ts = np.sort(rng.integers(t0, int(AS_OF.timestamp()) - 1, n))
        day = FIRST_TOKEN_ID + (ts - t0) // 86400
        rows["client_id"].append(first_client + u)
        rows["as_of"].append(AS_OF)
        rows["vocab_version"].append(vocab)
        rows["n_events"].append(n)
        rows["first_ts"].append(dt.datetime.fromtimestamp(int(ts[0]), dt.UTC))
        rows["last_ts"].append(dt.datetime.fromtimestamp(int(ts[-1]), dt.UTC))
        rows["seq_len"].append(n)
        rows["event_type"].append((et + FIRST_TOKEN_ID).tolist())
        rows["sku"].append(sku.tolist())
        rows["category"].append(cat.tolist())
        rows["price"].append(price.tolist())
        rows["url"].append(url.tolist())
        rows["query"].append(q[is_search].reshape(-1).tolist())  # sparse: searches only
        rows["day"].append(day.tolist())
        rows["week"].append((FIRST_TOKEN_ID + (day - FIRST_TOKEN_ID) // 7).tolist())
        rows["sku_raw"].append(np.where(is_prod, sku * 10, -1).tolist())
        rows["ts"].append(ts.tolist())
        rows["name"].append(name_tokens(sku[is_prod]).reshape(-1).tolist())  # sparse: product events only
    return pa.Table.from_pydict(rows, schema=USER_SEQUENCES.arrow_schema())


def name_tokens(sku: np.ndarray) -> np.ndarray:
    """[n, 16] name-code tokens of sku tokens: a fixed function of the sku (a product has one name)."""
    return FIRST_TOKEN_ID + (np.asarray(sku)[:, None] * (np.arange(QUERY_CODES) + 1)) % CODE_VALUES


def make_vocab(vocab: str = VOCAB) -> pa.Table:
    rows: dict[str, list] = {c: [] for c in VOCABULARIES.column_names}
    for field, size in SIZES.items():
        for tok in range(FIRST_TOKEN_ID, size):
            rows["version"].append(vocab)
            rows["field"].append(field)
            rows["raw_value"].append(tok - FIRST_TOKEN_ID)
            rows["token_id"].append(tok)
            rows["frequency"].append(1)
            rows["as_of"].append(AS_OF)
    return pa.Table.from_pydict(rows, schema=VOCABULARIES.arrow_schema())


def write_lakehouse(settings, n_users: int = 40, seed: int = 0, mode: str = "overwrite", vocab: str = VOCAB,
                    **kw) -> Path:
    """Write `user_sequences` and `vocabularies` under `settings`; returns the sequences path."""
    from deltalake import write_deltalake

    seq_path = settings.table_path("user_sequences")
    seq_path.parent.mkdir(parents=True, exist_ok=True)
    write_deltalake(str(seq_path), make_sequences(n_users, seed=seed, vocab=vocab, **kw), mode=mode)
    write_deltalake(str(settings.table_path("vocabularies")), make_vocab(vocab), mode=mode,
                    partition_by=["version"])
    return seq_path


BENCH_SIZES = {"event_type": 9, "sku": 5004, "category": 1004, "price": 104, "url": 5004, "query": 260,
               "day": 190, "week": 32}


def make_sequences_fast(n_users: int, seed: int = 0, zipf: float = 1.35, max_len: int = 126,
                        sizes: dict[str, int] | None = None, first_client: int = 0, vocab: str = VOCAB,
                        lengths: np.ndarray | None = None) -> pa.Table:
    """Vectorised generator for benchmarks (100k+ users): Zipf lengths clipped to max_len (or the given `lengths`),
    realistic vocab sizes (5k sku/url heads), same field semantics as `make_sequences`."""
    sizes = sizes or BENCH_SIZES
    rng = np.random.default_rng(seed)
    if lengths is not None:
        lens = np.asarray(lengths, dtype=np.int64)
        n_users = len(lens)
    else:
        lens = np.clip(rng.zipf(zipf, n_users), 1, max_len).astype(np.int64)
    n = int(lens.sum())
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    et = rng.choice(5, n, p=[0.04, 0.01, 0.02, 0.83, 0.10])
    prod, visit, search = et <= 2, et == 3, et == 4
    sku = np.where(prod, rng.zipf(1.3, n) % (sizes["sku"] - FIRST_TOKEN_ID) + FIRST_TOKEN_ID, PAD_ID)
    cat = np.where(prod, FIRST_TOKEN_ID + sku % (sizes["category"] - FIRST_TOKEN_ID), PAD_ID)
    price = np.where(prod, FIRST_TOKEN_ID + sku % (sizes["price"] - FIRST_TOKEN_ID), PAD_ID)
    url = np.where(visit, rng.zipf(1.3, n) % (sizes["url"] - FIRST_TOKEN_ID) + FIRST_TOKEN_ID, PAD_ID)
    query = rng.integers(FIRST_TOKEN_ID, sizes["query"], (int(search.sum()), QUERY_CODES)).reshape(-1)  # searches only
    q_offsets = np.concatenate([[0], np.cumsum(search)])[offsets] * QUERY_CODES
    n_offsets = np.concatenate([[0], np.cumsum(prod)])[offsets] * QUERY_CODES
    day = np.sort(rng.integers(FIRST_TOKEN_ID, sizes["day"], n))
    ts = (int(AS_OF.timestamp()) - 180 * 86400 + (day - FIRST_TOKEN_ID) * 86400).astype(np.int64)

    def lst(values: np.ndarray, typ=pa.int32(), offs: np.ndarray = offsets) -> pa.Array:
        return pa.ListArray.from_arrays(pa.array(offs, pa.int32()), pa.array(values, typ))

    first = ts[offsets[:-1]]
    last = ts[offsets[1:] - 1]
    cols = {
        "client_id": pa.array(np.arange(first_client, first_client + n_users, dtype=np.int64)),
        "as_of": pa.array([AS_OF] * n_users, pa.timestamp("us", tz="UTC")),
        "vocab_version": pa.array([vocab] * n_users),
        "n_events": pa.array(lens),
        "first_ts": pa.array(first * 1_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "last_ts": pa.array(last * 1_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "seq_len": pa.array(lens.astype(np.int32)),
        "event_type": lst(et + FIRST_TOKEN_ID), "sku": lst(sku), "category": lst(cat), "price": lst(price),
        "url": lst(url), "query": lst(query, offs=q_offsets), "day": lst(day),
        "week": lst(FIRST_TOKEN_ID + (day - FIRST_TOKEN_ID) // 7),
        "sku_raw": lst(np.where(prod, sku, -1), typ=pa.int64()), "ts": lst(ts, typ=pa.int64()),
        "name": lst(name_tokens(sku[prod]).reshape(-1), offs=n_offsets),
    }
    return pa.Table.from_pydict(cols, schema=USER_SEQUENCES.arrow_schema())


def write_bench_lakehouse(settings, n_users: int, seed: int = 0, chunk: int = 50_000, **kw) -> Path:
    """Write a benchmark-sized `user_sequences` (in chunks, bounded memory) and its vocabulary."""
    from deltalake import write_deltalake

    seq_path = settings.table_path("user_sequences")
    seq_path.parent.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, n_users, chunk)):
        t = make_sequences_fast(min(chunk, n_users - start), seed=seed + i, first_client=start, **kw)
        write_deltalake(str(seq_path), t, mode="overwrite" if i == 0 else "append")
    rows: dict[str, list] = {c: [] for c in VOCABULARIES.column_names}
    for field, size in (kw.get("sizes") or BENCH_SIZES).items():
        for tok in range(FIRST_TOKEN_ID, size):
            rows["version"].append(kw.get("vocab", VOCAB))
            rows["field"].append(field)
            rows["raw_value"].append(tok - FIRST_TOKEN_ID)
            rows["token_id"].append(tok)
            rows["frequency"].append(1)
            rows["as_of"].append(AS_OF)
    write_deltalake(str(settings.table_path("vocabularies")), pa.Table.from_pydict(
        rows, schema=VOCABULARIES.arrow_schema()), mode="overwrite", partition_by=["version"])
    return seq_path


def bench_job_batches(settings, n_users: int, preset: str = "small", batch_size: int = 128, n_batches: int = 8):
    """The bench lakehouse of `n_users`, a one-epoch `TrainJob` on it, and the first `n_batches` length-bucketed
    training batches that job's loop streams (same reader, same seed), materialised in memory.

    Returns (config, job, batches). Used by the training and GPU benchmarks, which time steps on exactly these."""
    from ubp.models.gru_ae import GRUAEConfig
    from ubp.models.train_user import TrainJob, _reader
    from ubp.models.user_data import stream_batches

    from ubp import reader

    path = write_bench_lakehouse(settings, n_users)
    sizes = reader.vocab_sizes(settings.table_path("vocabularies"), "v-test")
    cfg = GRUAEConfig.preset(preset, sizes, batch_size=batch_size, max_epochs=1)
    job = TrainJob(config=cfg, sequences_path=str(path), table_version=reader.table_version(path),
                   vocab_version="v-test", work_dir=Path(settings.lakehouse) / "work", seed=0, val_fraction=0.1,
                   max_batches=n_batches, show_progress=False)
    batches = []
    for b in stream_batches(_reader(job), cfg.input_fields, batch_size=cfg.batch_size, max_len=cfg.max_len,
                            split="train", val_fraction=0.1, seed=0, shuffle=True):
        batches.append(b)
        if len(batches) == n_batches:
            break
    return cfg, job, batches


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The CI box is 2 shared cores: intra-op threads spin-wait against other jobs (20x slower steps)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_chunk(n: int = 12, seed: int = 0, max_len: int = 20, **kw):
    """`n` users of `make_sequences` as an in-memory `SequenceChunk` of the small preset's input fields."""
    from ubp.models.gru_ae import GRUAEConfig
    from ubp.models.user_data import SequenceChunk

    cfg = GRUAEConfig.preset("small", SIZES)
    return SequenceChunk.from_arrow(make_sequences(n, seed=seed, max_len=max_len, **kw), cfg.input_fields, 128)


def encode_alone_and_in_batches(model, chunk) -> tuple[int, object]:
    """Encode the shortest user alone, inside the whole padded batch and beside the longest user, and assert the
    three vectors are equal (a user's profile must not depend on batch-mates or padding); returns (row, vector)."""
    import torch

    lengths = chunk.lengths
    short, long_ = int(np.argmin(lengths)), int(np.argmax(lengths))
    assert lengths[long_] > lengths[short] + 5
    with torch.no_grad():
        alone = model.encode(chunk.collate([short]))[0]
        in_batch = model.encode(chunk.collate(np.arange(len(chunk))))[short]  # padded to the longest batch-mate
        reordered = model.encode(chunk.collate([long_, short]))[1]
    assert torch.allclose(alone, in_batch, atol=1e-5)
    assert torch.allclose(alone, reordered, atol=1e-5)
    return short, alone


def write_version(vdir: Path, model, member: str) -> Path:
    """A registry-like version directory of `model`: config.json, weights.safetensors, model.json."""
    import json

    from ubp.models.common import save_weights

    (vdir / "config.json").write_text(json.dumps(model.config.to_dict()))
    save_weights(model, vdir / "weights.safetensors")
    (vdir / "model.json").write_text(json.dumps({"vocab_version": "v-test", "member": member}))
    return vdir
