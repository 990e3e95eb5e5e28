# FashionAI keypoint pipeline. `make help` lists the targets.
SHELL := /bin/bash
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help

INPUT   ?= input
OUTPUT  ?= output
CONFIG  ?= configs/demo.yaml
RUN     ?= $(basename $(notdir $(CONFIG)))
CAT     ?=
FOLD    ?= 0
SET     ?=
# make names files by their paths, and a path with a space is two words to it: refused at once
# (the Python stages take such paths: python -m pipeline.stages.<stage> --input "my data" ...)
$(foreach v,INPUT OUTPUT CONFIG,$(if $(filter-out 1,$(words $($(v)))),$(error $(v)="$($(v))" has a space in it: make cannot name files under such a path; use a path without spaces (a symlink to it works))))
# other targets' inputs (make help lists them all)
A        ?=
B        ?=
PRED     ?=
NAME     ?=
TRUTH    ?=
REAL     ?=
RUNTIMES ?=
UPDATE_DOCS ?=
# synthetic data size (make data)
SYNTH_TRAIN ?= 160
SYNTH_TEST  ?= 40
SYNTH_WARM  ?= 0
SYNTH_SEED  ?= 0
# a real annotation CSV: realism.json and data-preview show its figures beside the synthetic ones
REAL_ANN    ?=
# TensorFlow build (docs/getting-started.md, "Install"): GPU=1 installs the CUDA build, GPU=0 the CPU build; by default
# GPU=1 where `nvidia-smi -L` lists a GPU. TF_PACKAGE names the requirement itself (overrides both).
ifeq ($(origin GPU),undefined)
GPU := $(shell nvidia-smi -L 2>/dev/null | grep -q '^GPU ' && echo 1 || echo 0)
endif
TF_CPU_PACKAGE := $(if $(filter x86_64 amd64,$(shell uname -m)),tensorflow-cpu>=2.16,tensorflow>=2.16)
TF_GPU_PACKAGE := tensorflow[and-cuda]>=2.16
TF_PACKAGE ?= $(if $(filter 1,$(GPU)),$(TF_GPU_PACKAGE),$(TF_CPU_PACKAGE))
# Pinned installs (docs/getting-started.md, "Install"): by default `make install` installs a lock file (exact
# versions, sha256 of every file) with `pip --require-hashes`: requirements.lock for the CPU build
# on x86_64, requirements-gpu.lock for GPU=1. LOCK= (empty) or a TF_PACKAGE of your own installs
# the ranges of requirements.txt instead. `make lock` rewrites both lock files from those ranges.
LOCK_CPU := requirements.lock
LOCK_GPU := requirements-gpu.lock
LOCK_DEFAULT := $(if $(filter file,$(origin TF_PACKAGE)),$(if $(filter 1,$(GPU)),$(LOCK_GPU),$(if $(filter x86_64 amd64,$(shell uname -m)),$(LOCK_CPU))))
LOCK ?= $(LOCK_DEFAULT)
PYTHON ?= python3
BENCH_MODE ?= full
SCALE ?= 1

VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the distribution TF_PACKAGE installs (tensorflow-cpu, tensorflow, ...) and the variants removed first
TF_DIST  := $(firstword $(subst [, ,$(subst >, ,$(subst <, ,$(subst =, ,$(subst ~, ,$(subst !, ,$(TF_PACKAGE))))))))
TF_OTHER := $(filter-out $(TF_DIST),tensorflow tensorflow-cpu)
# $(TF_VARIANT) holds TF_PACKAGE and is rewritten only when it changes, so switching GPU=
# (or TF_PACKAGE) reinstalls; `make -n` writes nothing but still plans the reinstall.
TF_VARIANT := $(VENV)/.tf-variant
TF_VARIANT_CHANGED := $(shell test "$$(cat $(TF_VARIANT) 2>/dev/null)" = '$(TF_PACKAGE) $(LOCK)' || echo yes)
ifneq ($(TF_VARIANT_CHANGED),)
ifneq ($(findstring n,$(firstword -$(MAKEFLAGS))),)
TF_VARIANT := _tf-variant-changed
else
_ := $(shell mkdir -p $(VENV) && printf '%s\n' '$(TF_PACKAGE) $(LOCK)' > $(TF_VARIANT))
endif
endif
OVERRIDES := $(if $(strip $(SET)),--sets '$(SET)')
CFG_ARGS  := --config $(CONFIG) $(OVERRIDES)
# jobs given to make (-jN), so parallel trainings split the cores instead of oversubscribing them.
# Deferred (=, not :=): GNU make adds -jN to MAKEFLAGS only after parsing the makefile, so an
# immediate expansion always read 1 and two demo trainings each took every core.
MAKE_JOBS = $(or $(patsubst -j%,%,$(filter -j%,$(MAKEFLAGS))),1)
export PIPELINE_PARALLEL_JOBS = $(MAKE_JOBS)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1


.PHONY: help install lock doctor export gpu-check docs predict-dir test-fast test-multiworker bench-input _tf-variant-changed data data-preview preprocess baseline train train-all predict ensemble stack submit score \
        report demo test bench clean leaderboard compare score-file rehearse _preprocess _baseline _train-all _predict _ensemble _stack \
        _submit _publish _score _report _train

help:
	@echo "make demo        whole chain on synthetic data (or INPUT=...), prints the leaderboard"
	@echo "make test-fast   unit tests only (tests/unit, not slow; under 2 min)"
	@echo "make test        run the test suite"
	@echo "make test-multiworker  two MultiWorkerMirroredStrategy workers on 127.0.0.1 (slow; CI runs it)"
	@echo "make install     build .venv from requirements.txt + TensorFlow (GPU=1: CUDA build; automatic for other targets)"
	@echo "make lock        rewrite requirements.lock / requirements-gpu.lock (exact versions + hashes) from requirements.txt"
	@echo "make doctor      what TensorFlow sees: devices, precision and strategy \`auto\` picks, threads"
	@echo "make data        write the synthetic dataset into INPUT (never over real data)"
	@echo "make data-preview  contact sheet of 20 training images with labels -> OUTPUT/data_preview.png"
	@echo "make preprocess  parse/validate annotations, folds, image cache -> OUTPUT/prep/<dataset>/, runs/<run>/prep.json"
	@echo "make baseline    mean-shape baseline run (OUTPUT/runs/meanshape_k<k>_seed<s>), scored"
	@echo "make train CAT=dress FOLD=0   train one model (resumes when interrupted)"
	@echo "make train-all   every category x fold (use make -j2 train-all for parallel runs)"
	@echo "make predict     OOF + test predictions with flip TTA for every fold model"
	@echo "make ensemble    fold/member averaging -> OUTPUT/runs/<run>/<cat>/{oof,test}.csv"
	@echo "make stack       LightGBM level-2 corrections on OOF predictions (config stack.mode)"
	@echo "make submit      runs/<run>/submission.csv, validated, copied to OUTPUT/submission.csv"
	@echo "make score       CV/test NE of the run's categories, put on OUTPUT/leaderboard.csv"
	@echo "make leaderboard print OUTPUT/leaderboard.csv"
	@echo "make compare A=run1 B=run2   per category/keypoint: B vs A, paired bootstrap interval, significant?"
	@echo "make score-file PRED=file.csv NAME=label [TRUTH=answers.csv]  any submission file's test NE -> OUTPUT/leaderboard.csv"
	@echo "make report      PNG plots and OUTPUT/runs/<run>/report/index.html"
	@echo "make export RUN=<run>   self-contained bundle: models (.keras, SavedModel, TFLite, ONNX), configs, card -> OUTPUT/export/<run>/, .tar.gz"
	@echo "make predict-dir BUNDLE=<dir> IMAGES=<dir> [CAT=c]   predict a folder from a bundle alone -> PRED_CSV"
	@echo "make bench       benchmarks -> OUTPUT/bench/results.json, OUTPUT/bench/benchmarks.md (UPDATE_DOCS=1: docs/ too)"
	@echo "make gpu-check   timed run of configs/gpu.yaml's model on synthetic data: img/s, peak GPU memory, hours for the full set"
	@echo "make bench-input   JSON: training-input img/s at CONFIG's input size, per core and all cores"
	@echo "make rehearse SCALE=0.1  preprocess/predict at the real set's size x SCALE -> OUTPUT/rehearse/, docs/benchmarks.md"
	@echo "make docs        regenerate docs/configuration.md and the figures blocks of README.md and docs/"
	@echo "make clean       remove OUTPUT's datasets, runs, leaderboard and submission (installs nothing)"
	@echo ""
	@echo "variables (current value):"
	@echo "  INPUT=$(INPUT)  data in the official layout   OUTPUT=$(OUTPUT)  where everything is written"
	@echo "  CONFIG=$(CONFIG)   RUN=$(RUN)  (default: the config's name)"
	@echo "  CAT=$(CAT)  model to train: a category, or joint (empty: the config's only model)   FOLD=$(FOLD)"
	@echo "  SET=$(SET)  overrides, e.g. SET='train.epochs=3 predict.scales=[0.9, 1.0, 1.1]'"
	@echo "  DEMO_JOBS=$(DEMO_JOBS)  trainings side by side in make demo"
	@echo "  SYNTH_TRAIN=$(SYNTH_TRAIN) SYNTH_TEST=$(SYNTH_TEST) SYNTH_WARM=$(SYNTH_WARM) SYNTH_SEED=$(SYNTH_SEED)  make data's size and seed"
	@echo "  REAL_ANN=$(REAL_ANN)  a real annotation CSV to compare synthetic statistics with (make data, data-preview)"
	@echo "  GPU=$(GPU)  1: CUDA build of TensorFlow   TF_PACKAGE=$(TF_PACKAGE)   LOCK=$(LOCK)  (empty: requirements.txt's ranges)"
	@echo "  PYTHON=$(PYTHON)  interpreter that builds .venv   LOCK_ARGS=$(LOCK_ARGS) LOCK_PY=$(LOCK_PY)  (make lock)"
	@echo "  A=$(A) B=$(B)  runs of make compare   PRED=$(PRED) NAME=$(NAME) TRUTH=$(TRUTH)  (make score-file)"
	@echo "  BUNDLE=$(BUNDLE) IMAGES=$(IMAGES) PRED_CSV=$(PRED_CSV) RUNTIMES=$(RUNTIMES)  (make export / predict-dir; RUNTIMES=0: Keras only)"
	@echo "  BENCH_MODE=$(BENCH_MODE) REAL=$(REAL) UPDATE_DOCS=$(UPDATE_DOCS)  (make bench; UPDATE_DOCS=1 also writes docs/)   SCALE=$(SCALE)  (make rehearse)"
	@echo "  CHECK_CONFIG=$(CHECK_CONFIG) CHECK_SECONDS=$(CHECK_SECONDS)  (make gpu-check)"

# ------------------------------------------------------------------ install
# tensorflow and tensorflow-cpu share one package directory: never both. Switching removes the
# other variant and the wanted one (its files may be the other's), then installs the wanted one.
$(STAMP): requirements.txt $(LOCK) $(TF_VARIANT)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@for other in $(TF_OTHER); do if $(PY) -m pip show -q $$other >/dev/null 2>&1; then \
		echo "install: removing $$other (installing $(TF_PACKAGE))"; \
		$(PY) -m pip uninstall -q -y $$other $(TF_DIST) >/dev/null 2>&1; fi; done
ifneq ($(LOCK),)
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes -r $(LOCK)
else
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt '$(TF_PACKAGE)'
endif
	@touch $@

# rewrite both lock files from requirements.txt's ranges (newest versions that satisfy them),
# with uv in its own environment so that .venv holds exactly a lock; LOCK_ARGS e.g. --upgrade-package numpy
LOCK_ARGS ?= --upgrade
LOCK_PY   ?= 3.11
UV := .venv-lock/bin/uv
$(UV):
	$(PYTHON) -m venv .venv-lock && .venv-lock/bin/python -m pip install -q --disable-pip-version-check uv
lock: $(UV)
	@set -e; for build in "$(LOCK_CPU)|$(TF_CPU_PACKAGE)" "$(LOCK_GPU)|$(TF_GPU_PACKAGE)"; do \
		file=$${build%%|*}; tf=$${build#*|}; in=.venv-lock/$$file.in; \
		{ grep -v '^[[:space:]]*#' requirements.txt | grep .; echo "$$tf"; } > $$in; \
		$(UV) pip compile $$in $(LOCK_ARGS) --generate-hashes --python-version $(LOCK_PY) \
			--python-platform x86_64-manylinux_2_28 --no-header --quiet -o $$file; \
		sed -i '/^# .*(make lock)$$/d' $$file; \
		sed -i "1i # $$file: requirements.txt + $$tf resolved for Python $(LOCK_PY), x86_64 Linux (make lock)" $$file; \
		echo "lock: $$file ($$(grep -c '==' $$file) pins)"; done

install: $(STAMP)

# `make -n` with another GPU=/TF_PACKAGE than the installed one: shown as a reinstall
_tf-variant-changed:

doctor: $(STAMP)
	@$(PY) -m pipeline.stages.doctor $(CFG_ARGS)
	@$(if $(LOCK),$(PY) -m pipeline.tools.lockfile check $(LOCK) || true,echo "lock: none (installed from requirements.txt's ranges)")

# ------------------------------------------------------------------ data
data: $(STAMP)
	$(PY) -m pipeline.synth --out $(INPUT) --train-per-cat $(SYNTH_TRAIN) --test-per-cat $(SYNTH_TEST) \
		--warm-per-cat $(SYNTH_WARM) --seed $(SYNTH_SEED)$(if $(REAL_ANN), --real-ann $(REAL_ANN))

data-preview: $(STAMP)
	@if ! ls $(INPUT)/*/Annotations/*.csv >/dev/null 2>&1; then $(MAKE) --no-print-directory data; fi
	$(PY) -m pipeline.tools.synth.preview --input $(INPUT) --output $(OUTPUT)$(if $(REAL_ANN), --real-ann $(REAL_ANN))

# ------------------------------------------------------------------ stages
# Every stage is a file target. While make reads this file, `pipeline.stages.stamps stamps` writes
# runs/<run>/.stamps/<stage>.json — the resolved settings each stage depends on (the prep stamp
# also the input fingerprint) — rewriting a stamp only when its content changes, so an edit of
# the config, of a file it inherits from, or of SET= reaches exactly the stages it concerns,
# and `make -n submit` shows what would run. It also writes vars.mk, which holds the run's names
# and every artifact path below (this file spells none: they come from pipeline/store/layout.py),
# and prints its path. Each stage also records its inputs beside its outputs and redoes its work
# only when they changed (pipeline/store/records.py).
STAGE_GOALS := _preprocess _baseline _train-all _predict _ensemble _stack _submit _publish _score _report _train
ifneq ($(filter $(STAGE_GOALS),$(MAKECMDGOALS)),)
ifneq ($(wildcard $(PY)),)
STAMPS_OUT := $(shell $(PY) -m pipeline.stages.stamps stamps --output $(OUTPUT) --input $(INPUT) --run $(RUN) \
                 $(CFG_ARGS) 2>&1)
VARS_MK := $(filter %vars.mk,$(STAMPS_OUT))
ifeq ($(VARS_MK),)
$(error $(STAMPS_OUT))
endif
include $(VARS_MK)
endif
endif

# the public stage targets install first, then make the files (a fresh make reads the stamps)
preprocess baseline train-all predict ensemble stack submit score report: $(STAMP)
	@$(MAKE) --no-print-directory _$@

train: $(STAMP)
	@$(MAKE) --no-print-directory _train

ifneq ($(CATS),)
# members other than this run are made with their own config: a missing one is named by `ensemble`
OTHER_PREDS := $(wildcard $(MEMBER_PREDS))
FALLBACK_DEP := $(if $(PARTIAL),$(if $(filter $(FALLBACK),$(BASE_RUN)),$(FALLBACK_REC),$(wildcard $(FALLBACK_REC))))
PUBLISHED := $(shell cmp -s $(RUN_SUBMISSION) $(SUBMISSION) 2>/dev/null && echo yes)

$(PREP_REF): $(STAMP_prep)
	$(PY) -m pipeline.stages.preprocess --input $(INPUT) --output $(OUTPUT) --run $(RUN) $(CFG_ARGS)

$(BASE_SCORES): $(PREP_REF)
	$(PY) -m pipeline.stages.baseline --output $(OUTPUT) --run $(RUN) $(CFG_ARGS)

# one model; the model directory is locked while it trains (a second trainer stops at once).
# One static pattern rule per category (or the joint model), the stem `%` being the fold: its
# models depend on its own train stamp (config `categories:` overrides)
define TRAIN_RULE
$(MODELS_$(1)): $(MODEL_PATTERN_$(1)): $(PREP_REF) $(STAMP_train-$(1))
	$$(PY) -m pipeline.stages.train --output $$(OUTPUT) $$(CFG_ARGS) --run $$(RUN) --category $(1) --fold $$*
endef
$(foreach c,$(MODEL_NAMES),$(eval $(call TRAIN_RULE,$(c))))

$(PREDS): $(MODELS) $(STAMP_predict)
	$(PY) -m pipeline.stages.predict --output $(OUTPUT) $(CFG_ARGS) --run $(RUN)

$(ENSEMBLE_REC): $(PREDS) $(OTHER_PREDS) $(STAMP_ensemble)
	$(PY) -m pipeline.stages.ensemble --output $(OUTPUT) $(CFG_ARGS) --run $(RUN)

$(STACK_REC): $(ENSEMBLE_REC) $(STAMP_stack)
	$(PY) -m pipeline.stages.stack --output $(OUTPUT) $(CFG_ARGS) --run $(RUN)

$(SUBMIT_REC): $(STACK_REC) $(FALLBACK_DEP) $(STAMP_submit)
	$(PY) -m pipeline.stages.submit --output $(OUTPUT) $(CFG_ARGS) --run $(RUN)

$(SCORES_REC): $(SUBMIT_REC) $(STAMP_score)
	$(PY) -m pipeline.stages.score --output $(OUTPUT) $(CFG_ARGS) --run $(RUN)

$(REPORT_HTML): $(SCORES_REC)
	$(PY) -m pipeline.stages.report --output $(OUTPUT) $(CFG_ARGS) --run $(RUN)

_preprocess: $(PREP_REF)
_baseline: $(BASE_SCORES)
_train-all: $(MODELS)
_predict: $(PREDS)
_ensemble: $(ENSEMBLE_REC)
_stack: $(STACK_REC)
_submit: $(SUBMIT_REC) $(if $(PUBLISHED),,_publish)
_score: $(SCORES_REC)
_report: $(REPORT_HTML)
# SUBMISSION (OUTPUT/submission.csv) is the last submitted run's file: copied when it differs
_publish: $(SUBMIT_REC)
	@cmp -s $(RUN_SUBMISSION) $(SUBMISSION) || { cp $(RUN_SUBMISSION) $(SUBMISSION).tmp && \
		mv $(SUBMISSION).tmp $(SUBMISSION) && echo "submit: $(SUBMISSION) = $(RUN_SUBMISSION)"; }
_train: $(PREP_REF)
	$(PY) -m pipeline.stages.train --output $(OUTPUT) $(CFG_ARGS) --run $(RUN) $(if $(CAT),--category $(CAT)) --fold $(FOLD)
endif

leaderboard: $(STAMP)
	@$(PY) -m pipeline.stages.score --output $(OUTPUT) --show

compare: $(STAMP)
	@if [ -z "$(A)" ] || [ -z "$(B)" ]; then echo "compare: give two scored runs: make compare A=run1 B=run2" >&2; exit 2; fi
	@$(PY) -m pipeline.stages.compare --output $(OUTPUT) $(A) $(B)

# a row for any submission file (a competitor's, an old one): test NE, interval, per category; read as
# the platform read files (any order, no header, other categories' cells ignored). TRUTH: the answers.
score-file: $(STAMP)
	@if [ -z "$(PRED)" ] || [ -z "$(NAME)" ]; then echo "score-file: give a file and a label: make score-file PRED=file.csv NAME=label [TRUTH=answers.csv]" >&2; exit 2; fi
	@$(PY) -m pipeline.stages.score --output $(OUTPUT) --file '$(PRED)' --name '$(NAME)' --truth '$(or $(TRUTH),$(INPUT)/test/answers.csv)'

# ------------------------------------------------------------------ whole chain
demo: $(STAMP)
	@if ! ls $(INPUT)/*/Annotations/*.csv >/dev/null 2>&1; then $(MAKE) --no-print-directory data; fi
	@$(MAKE) --no-print-directory _baseline
	@$(MAKE) --no-print-directory -j$(DEMO_JOBS) _train-all
	@$(MAKE) --no-print-directory _submit _score _report
	@$(PY) -m pipeline.stages.score --output $(OUTPUT) --show
	@$(PY) -m pipeline.stages.stamps where --output $(OUTPUT) --run $(RUN) $(CFG_ARGS)

DEMO_JOBS ?= 2

# ------------------------------------------------------------------ releases
# a self-contained bundle of the run's ensemble (OUTPUT/export/<run>/ and .tar.gz; pipeline/release/bundle.py)
# predict-dir: BUNDLE defaults to RUN's export, PRED_CSV to OUTPUT/predict_dir/<bundle>.csv
BUNDLE ?=
IMAGES ?= $(INPUT)/test/Images
PRED_CSV ?=
export: $(STAMP)
	$(PY) -m pipeline.stages.export --output $(OUTPUT) --run $(RUN) $(if $(filter 0,$(RUNTIMES)),--keras-only)

# predict a folder of images (<category>/*.jpg, or CAT= for all) from a bundle alone -> PRED_CSV
predict-dir: $(STAMP)
	$(PY) -m pipeline.stages.export --output $(OUTPUT) --run $(RUN) --images $(IMAGES) $(if $(BUNDLE),--bundle $(BUNDLE)) \
		$(if $(CAT),--category $(CAT)) $(if $(PRED_CSV),--out $(PRED_CSV))

test: $(STAMP)
	$(PY) -m pytest -q tests

# the unit tests alone (tests/unit/, nothing marked slow): under 2 minutes on 2 cores
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not multiworker" tests/unit

bench: $(STAMP)
	$(PY) -m pipeline.tools.bench --output $(OUTPUT) --mode $(BENCH_MODE) $(if $(REAL),--real $(REAL)) $(if $(filter 1,$(UPDATE_DOCS)),--update-docs)

# the generated docs: the configuration reference from the config dataclasses, and every figures
# block of README.md and docs/ from docs/results/*.json (tests fail when either is stale)
docs: $(STAMP)
	$(PY) -m pipeline.tools.config_doc
	$(PY) -m pipeline.tools.docs_figures render

# a 2-3 minute timed run of configs/gpu.yaml's model on synthetic data: train/predict img/s, peak GPU
# memory, hours for the full real set (CHECK_CONFIG= another config, CHECK_SECONDS= the timed training)
CHECK_CONFIG  ?= configs/gpu.yaml
CHECK_SECONDS ?= 90
gpu-check: $(STAMP)
	$(PY) -m pipeline.tools.gpu_check --config $(CHECK_CONFIG) --seconds $(CHECK_SECONDS) $(OVERRIDES) --json $(OUTPUT)/gpu_check.json

# input-pipeline img/s at the config's input size, one core and all cores (JSON on stdout)
bench-input: $(STAMP)
	@$(PY) -m pipeline.tools.throughput $(CFG_ARGS)

test-multiworker: $(STAMP)
	$(PY) -m pytest -q -m multiworker tests/integration/test_multiworker.py

# scale rehearsal: a synthetic set of the real size x SCALE (1: 31,631 + 12,534 + 10,000 images)
rehearse: $(STAMP)
	$(PY) -m pipeline.tools.rehearse --output $(OUTPUT) --scale $(SCALE)

# no install: the system Python runs it (standard library only)
clean:
	@$(or $(wildcard $(PY)),$(PYTHON)) -m pipeline.stages.clean --output $(OUTPUT)
