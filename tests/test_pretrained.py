"""Published Hugging Face models read from disk (`ssl_jax.pretrained`): the same outputs,
tokens, fill-mask answers and greedy continuations as `transformers`, found by name in a local
hub cache, and one-line errors. The models are tiny and built here (tests/hf_models.py); needs
torch and transformers (requirements-parity.txt), skipped without them.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import hf_models  # noqa: E402  (tests/; imports torch)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from configs import causal_lm, mlm  # noqa: E402
from ssl_jax import config_lib, fill_mask, generate, main, pretrained, restore, train  # noqa: E402
from ssl_jax.data import tokenizer as tokenizer_lib  # noqa: E402
from ssl_jax.errors import UserError  # noqa: E402
from tiny_configs import override  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("bert_pretraining", "bert_mlm", "bert_base_model", "distilbert_mlm",
         "distilbert_base_model", "roberta_mlm", "gpt2")
MASKED_LMS = ("bert_mlm", "distilbert_mlm", "roberta_mlm")
TOLERANCE = 1e-4
SENTENCES = ["The capital of France is Paris.", "Héllo WORLD, naïve Café résumé!",
             "unknownword xyzzy Rhône; 42 quick-brown foxes?", "  spaced\tout   text  "]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """{kind: (folder, torch model, transformers tokenizer)}, each written by save_pretrained."""
  base = tmp_path_factory.mktemp("hf")
  built = {}
  for seed, kind in enumerate(KINDS):
    model, tokenizer = hf_models.save(kind, str(base / kind), seed)
    built[kind] = (str(base / kind), model, tokenizer)
  return built


def _theirs(model, tokens, mask):
  with torch.no_grad():
    return model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                 output_hidden_states=True)


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_and_tokens_equal_transformers(models, kind):
  folder, model, tokenizer = models[kind]
  ours = pretrained.load(folder, dropout=0.0)
  for sentence in SENTENCES:  # the model's own tokenisation, special tokens included
    assert ours.encode([sentence])[0][0].tolist() == tokenizer(sentence)["input_ids"], sentence
  tokens, mask = ours.encode(SENTENCES)
  assert mask.sum(1).tolist() == [len(tokenizer(s)["input_ids"]) for s in SENTENCES]
  theirs = _theirs(model, tokens, mask)
  if ours.is_decoder:
    out = ours.network.apply({"params": ours.params}, jnp.asarray(tokens), jnp.asarray(mask))
  else:
    out = ours.network.apply({"params": ours.params}, jnp.asarray(tokens), None,
                             jnp.asarray(mask))
  real = mask.astype(bool)
  diffs = {"hidden": np.abs(np.asarray(out.hidden)[real]
                            - theirs.hidden_states[-1].numpy()[real]).max()}
  logits = getattr(theirs, "prediction_logits", getattr(theirs, "logits", None))
  assert (out.logits is None) == (logits is None)  # a *Model has no head, here or there
  if logits is not None:
    diffs["logits"] = np.abs(np.asarray(out.logits)[real] - logits.numpy()[real]).max()
  if out.pooled is not None:
    with torch.no_grad():  # BertForPreTraining returns no pooler output: apply its pooler
      pooled = getattr(model, "bert", model).pooler(theirs.hidden_states[-1]).numpy()
    diffs["pooled"] = np.abs(np.asarray(out.pooled) - pooled).max()
  assert (out.pooled is not None) == (kind in ("bert_pretraining", "bert_base_model"))
  if kind == "bert_pretraining":
    nsp = np.asarray(out.pooled) @ ours.nsp_params["kernel"] + ours.nsp_params["bias"]
    diffs["next_sentence"] = np.abs(nsp - theirs.seq_relationship_logits.numpy()).max()
  print(kind, diffs)
  assert max(diffs.values()) < TOLERANCE, diffs


@pytest.mark.parametrize("kind", MASKED_LMS)
def test_fill_mask_gives_the_pipelines_top_5(models, kind):
  folder, _, tokenizer = models[kind]
  pipeline = transformers.pipeline("fill-mask", model=folder, tokenizer=folder, top_k=5)
  texts = [f"The capital of France is {tokenizer.mask_token}.",
           "Hello [MASK] and Lyon, [MASK]!"]  # [MASK] is read as RoBERTa's <mask>
  ours = fill_mask.fill_pretrained(folder, texts, 5)
  for text, filled in zip(texts, ours):
    expected = pipeline(text.replace("[MASK]", tokenizer.mask_token))
    expected = [expected] if isinstance(expected[0], dict) else expected
    assert len(filled) == len(expected)
    for candidates, answers in zip(filled, expected):
      assert [token for token, _ in candidates] == [
          tokenizer.decode([a["token"]]).strip() for a in answers]
      np.testing.assert_allclose([p for _, p in candidates], [a["score"] for a in answers],
                                 atol=1e-5)


def test_greedy_generation_equals_transformers(models):
  folder, model, tokenizer = models["gpt2"]
  prompt = "The capital of France is"
  (ours,) = generate.generate_pretrained(folder, prompt, temperature=0.0, top_k=0,
                                         max_new_tokens=8, seed=0)
  ids = tokenizer(prompt, return_tensors="pt").input_ids
  theirs = model.generate(ids, max_new_tokens=8, do_sample=False,
                          pad_token_id=tokenizer.eos_token_id)
  assert ours == tokenizer.decode(theirs[0], skip_special_tokens=True)


def test_a_name_is_found_in_the_local_hub_cache(models, tmp_path, monkeypatch):
  """The hub cache's layout (models--ORG--NAME/refs/main -> snapshots/HASH); the bare name of
  a model the hub moved to an organisation is found there too. Nothing is downloaded."""
  folder = models["bert_mlm"][0]
  cache = tmp_path / "hub"
  repo = cache / "models--google-bert--bert-tiny-test"
  shutil.copytree(folder, repo / "snapshots" / "0123abcd")
  (repo / "refs").mkdir()
  (repo / "refs" / "main").write_text("0123abcd")
  monkeypatch.setenv("HF_HUB_CACHE", str(cache))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  for name in ("google-bert/bert-tiny-test", "bert-tiny-test"):
    found = pretrained.find_folder(name)
    assert os.path.samefile(found, repo / "snapshots" / "0123abcd")
  with pytest.raises(UserError, match=f"not in the local Hugging Face cache {cache}"):
    pretrained.find_folder("roberta-tiny-test")


def test_pytorch_weights_need_torch(models, tmp_path, monkeypatch):
  folder, model, _ = models["distilbert_mlm"]
  pickled = tmp_path / "pickled"
  shutil.copytree(folder, pickled)
  os.remove(pickled / "model.safetensors")
  torch.save(model.state_dict(), pickled / "pytorch_model.bin")
  loaded = pretrained.load(str(pickled))  # with torch: the same parameters
  expected = pretrained.load(folder)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(loaded.params),
                                                   jax.tree.leaves(expected.params)))
  monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
  with pytest.raises(UserError, match="only pytorch_model.bin, which needs torch"):
    pretrained.load(str(pickled))


def test_commands_print_only_the_answer_and_refuse_in_one_line(models):
  env = {key: value for key, value in os.environ.items()
         if key not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
  env["PYTHONPATH"] = ROOT

  def run(module, *args):
    return subprocess.run([sys.executable, "-m", f"ssl_jax.{module}", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)

  bert, gpt2 = models["bert_mlm"][0], models["gpt2"][0]
  result = run("fill_mask", f"--pretrained={bert}", "--top_k=3",
               "The capital of France is [MASK].")
  assert result.returncode == 0, result.stderr
  assert result.stderr == ""
  lines = result.stdout.splitlines()
  assert lines[0] == "The capital of France is [MASK]." and len(lines) == 2
  expected = fill_mask.fill_pretrained(bert, ["The capital of France is [MASK]."], 3)[0][0]
  assert lines[1] == "  [MASK] 1: " + "  ".join(f"{t} {p:.3f}" for t, p in expected)
  for module, args, message in [
      ("fill_mask", [f"--pretrained={gpt2}", "A [MASK]."], "fill_mask needs a masked LM"),
      ("fill_mask", [f"--pretrained={models['bert_base_model'][0]}", "A [MASK]."],
       "BertModel"),
      ("generate", [f"--pretrained={bert}", "A"], "generate needs a causal LM (GPT-2)"),
      ("generate", ["--pretrained=/no/such/folder", "A"], "is not a model folder"),
      ("generate", [f"--pretrained={gpt2}", f"--workdir={gpt2}", "A"], "give one of"),
  ]:
    result = run(module, *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _continued(config_module, init_from, data_dir, **dotted):
  """The python_docs config of `config_module`, tiny, continuing the published `init_from`."""
  config = config_module.get_config("python_docs,runlocal=True")
  config.unlock()
  return override(config, **{"init_from": f"hf:{init_from}", "data.data_dir": data_dir,
                             "batch_size": 8, "total_steps": 0, "evaluate_at_end": False,
                             "mesh": "data:1", "evals.plots.enabled": False, **dotted})


@pytest.fixture(scope="module")
def text_data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def test_init_from_starts_at_the_published_parameters_with_its_tokenizer(
    models, text_data_dir, tmp_path):
  """Step 0 of an mlm run continuing BERT holds the converted encoder and next-sentence head
  (with total_steps=0 the run only evaluates them, against the bag of words and the untrained
  network);
  the run keeps the model's tokenizer, vocabulary and special ids ([CLS] is 4 and [MASK] 6
  in the test vocabulary, not this codebase's 2 and 4); fill-mask on the run proposes what
  the published model does, special tokens left out."""
  folder = models["bert_pretraining"][0]
  workdir = str(tmp_path / "run")
  config = _continued(mlm, folder, text_data_dir, evaluate_at_end=True, **{
      "evals.probes.protocols": ("knn",), "evals.probes.labels_per_class": (0,),
      "evals.probes.seeds": 1})
  main.run(config, workdir)  # total_steps=0: the published model, evaluated
  report = json.load(open(os.path.join(workdir, "eval", "report.json")))
  assert report["checkpoint_step"] == 0
  assert {r["features"] for r in report["results"]} == {"ssl", "random_init", "raw"}
  assert report["held_out"]["perplexity"] > 1
  restored = restore.latest(config_lib.load_saved(workdir), workdir)
  assert restored.step == 0
  state = jax.device_get(restored.state)
  published = pretrained.load(folder)
  model = state["params"]["model"]
  for ours, theirs in ((model["encoder"], published.params), (model["nsp"], published.nsp_params)):
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(ours),
                                                     jax.tree.leaves(theirs)))
  with open(os.path.join(folder, "tokenizer.json")) as f, \
      open(os.path.join(workdir, "tokenizer.json")) as g:
    assert json.load(f) == json.load(g)
  saved = json.load(open(os.path.join(workdir, "config.json")))
  assert saved["tokenizer"]["vocab_size"] == len(hf_models.WORDPIECE_VOCAB)
  assert saved["tokenizer"]["special_ids"] == {"pad": 0, "cls": 4, "sep": 5, "mask": 6,
                                               "excluded": [0, 3, 4, 5, 6]}
  text = "The capital of France is [MASK]."
  (ours,) = fill_mask.fill(workdir, [text], 5)[0]
  (everything,) = fill_mask.fill_pretrained(folder, [text], len(hf_models.WORDPIECE_VOCAB))[0]
  words = [(t, p) for t, p in everything if t not in ("[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                      "[MASK]")][:5]
  assert [t for t, _ in ours] == [t for t, _ in words]
  np.testing.assert_allclose([p for _, p in ours], [p for _, p in words], rtol=1e-4)


def test_init_from_trains_an_encoder_without_pooler_and_a_decoder(models, text_data_dir,
                                                                   tmp_path):
  """DistilBERT (no pooler: next-sentence prediction off) and GPT-2 continue for two steps
  on the model's own token rows: [CLS] ... [SEP] and <|endoftext|> ... <|endoftext|>."""
  from ssl_jax.data import inputs as inputs_lib  # pylint: disable=g-import-not-at-top
  from ssl_jax import modalities  # pylint: disable=g-import-not-at-top
  for config_module, kind, dotted in (
      (mlm, "distilbert_mlm", {"mlm.nsp": False, "data.sentence_pairs": False}),
      (causal_lm, "gpt2", {})):
    folder, _, tokenizer = models[kind]
    config = _continued(config_module, folder, text_data_dir, total_steps=2, **dotted)
    workdir = str(tmp_path / kind)
    train.run(config, workdir)
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert rows[-1]["step"] == 2 and np.isfinite(rows[-1]["loss"])
    resolved = modalities.find(config).resolve_config(config)
    batch = next(inputs_lib.Inputs(resolved, workdir).train_batches(
        start_step=0, process_index=0, process_count=1))
    start = tokenizer.cls_token_id if kind != "gpt2" else tokenizer.eos_token_id
    end = tokenizer.sep_token_id if kind != "gpt2" else tokenizer.eos_token_id
    assert (batch["tokens"][:, 0] == start).all()
    lengths = batch["attention_mask"].sum(1)
    assert (batch["tokens"][np.arange(len(lengths)), lengths - 1] == end).all()
    specials = tokenizer_lib.special_ids(resolved)
    assert set(specials.excluded) == set(tokenizer.all_special_ids)


@pytest.mark.parametrize("config_module,kind,dotted,cause", [
    (causal_lm, "bert_mlm", {}, "is a bert model; causal_lm continues a decoder"),
    (mlm, "gpt2", {}, "is a gpt2 model; mlm continues an encoder"),
    (mlm, "distilbert_mlm", {}, "config.mlm.nsp needs a pooler and two segment types"),
    (mlm, "bert_mlm", {"data.max_length": 65}, "exceeds the 64 positions"),
])
def test_init_from_that_cannot_work_is_one_line_before_training(
    models, text_data_dir, tmp_path, config_module, kind, dotted, cause):
  config = _continued(config_module, models[kind][0], text_data_dir, **dotted)
  with pytest.raises(UserError, match=cause):
    train.run(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_init_from_needs_the_hf_prefix(text_data_dir, tmp_path):
  config = override(_continued(mlm, "x", text_data_dir), init_from="bert-base-uncased")
  with pytest.raises(UserError, match="config.init_from must be hf:NAME_OR_PATH"):
    train.run(config, str(tmp_path / "run"))
