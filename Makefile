# FashionAI keypoint pipeline. `make help` lists the targets.
SHELL := /bin/bash
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help

INPUT   ?= input
OUTPUT  ?= output
CONFIG  ?= configs/demo.yaml
RUN     ?= $(basename $(notdir $(CONFIG)))
CAT     ?= dress
FOLD    ?= 0
SET     ?=
# synthetic data size (make data)
SYNTH_TRAIN ?= 160
SYNTH_TEST  ?= 40
SYNTH_WARM  ?= 0
SYNTH_SEED  ?= 0
# extra pip requirement, e.g. TF_PACKAGE='tensorflow[and-cuda]' for NVIDIA GPUs
TF_PACKAGE ?=
PYTHON ?= python3
BENCH_MODE ?= full

VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OVERRIDES := $(foreach s,$(SET),--set $(s))
CFG_ARGS  := --config $(CONFIG) $(OVERRIDES)
# jobs given to make (-jN), so parallel trainings split the cores instead of oversubscribing them
MAKE_JOBS := $(or $(patsubst -j%,%,$(filter -j%,$(MAKEFLAGS))),1)
export PIPELINE_PARALLEL_JOBS := $(MAKE_JOBS)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

PREP := $(OUTPUT)/prep/index.csv

.PHONY: help install data data-preview preprocess baseline train train-all predict ensemble stack submit score \
        report demo test bench clean _train-models

help:
	@echo "make demo        whole chain on synthetic data (or INPUT=...), prints the leaderboard"
	@echo "make test        run the test suite"
	@echo "make install     build .venv from requirements.txt (automatic for other targets)"
	@echo "make data        write the synthetic dataset into INPUT (never over real data)"
	@echo "make data-preview  contact sheet of 20 training images with labels -> OUTPUT/data_preview.png"
	@echo "make preprocess  parse/validate annotations, folds, image cache -> OUTPUT/prep/"
	@echo "make baseline    mean-shape baseline run (OUTPUT/runs/meanshape), scored"
	@echo "make train CAT=dress FOLD=0   train one model (resumes when interrupted)"
	@echo "make train-all   every category x fold (use make -j2 train-all for parallel runs)"
	@echo "make predict     OOF + test predictions with flip TTA for every fold model"
	@echo "make ensemble    fold/member averaging -> OUTPUT/runs/<run>/<cat>/{oof,test}.csv"
	@echo "make stack       LightGBM level-2 corrections on OOF predictions (config stack.mode)"
	@echo "make submit      OUTPUT/submission.csv, validated"
	@echo "make score       CV/test NE, appended to OUTPUT/leaderboard.csv"
	@echo "make report      PNG plots and OUTPUT/report/index.html"
	@echo "make bench       benchmarks -> OUTPUT/bench/results.json, docs/benchmarks.md"
	@echo "variables: INPUT=$(INPUT) OUTPUT=$(OUTPUT) CONFIG=$(CONFIG) RUN=$(RUN) CAT FOLD SET='train.epochs=3 ...'"

# ------------------------------------------------------------------ install
$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt $(TF_PACKAGE)
	@touch $@

install: $(STAMP)

# ------------------------------------------------------------------ data
data: $(STAMP)
	$(PY) -m pipeline.synth --out $(INPUT) --train-per-cat $(SYNTH_TRAIN) --test-per-cat $(SYNTH_TEST) \
		--warm-per-cat $(SYNTH_WARM) --seed $(SYNTH_SEED)

data-preview: $(STAMP)
	@if ! ls $(INPUT)/*/Annotations/*.csv >/dev/null 2>&1; then $(MAKE) --no-print-directory data; fi
	$(PY) -m pipeline.synth.preview --input $(INPUT) --out $(OUTPUT)/data_preview.png

# ------------------------------------------------------------------ stages
preprocess: $(STAMP)
	$(PY) -m pipeline.preprocess --input $(INPUT) --output $(OUTPUT) $(CFG_ARGS)

BASELINE_ARGS := $(CFG_ARGS) --run meanshape --set ensemble.name=meanshape --set 'ensemble.members=[meanshape]'
baseline: $(STAMP)
	$(PY) -m pipeline.baseline --output $(OUTPUT) $(CFG_ARGS)
	$(PY) -m pipeline.ensemble --output $(OUTPUT) $(BASELINE_ARGS)
	$(PY) -m pipeline.score --output $(OUTPUT) $(BASELINE_ARGS)

train: $(STAMP)
	$(PY) -m pipeline.train --output $(OUTPUT) $(CFG_ARGS) --run $(RUN) --category $(CAT) --fold $(FOLD)

train-all: $(STAMP)
	@$(MAKE) --no-print-directory _train-models \
		FOLDS="$$($(PY) -m pipeline.config $(CFG_ARGS) --get data.folds)" \
		CATS="$$($(PY) -m pipeline.config $(CFG_ARGS) --get data.categories)"

MODEL_TARGETS := $(foreach c,$(CATS),$(foreach f,$(shell seq 0 $$(( $(or $(FOLDS),1) - 1 ))),$(OUTPUT)/runs/$(RUN)/$(c)/fold$(f)/metrics.json))
_train-models: $(MODEL_TARGETS)

$(OUTPUT)/runs/$(RUN)/%/metrics.json: $(PREP) $(CONFIG)
	$(PY) -m pipeline.train --output $(OUTPUT) $(CFG_ARGS) --run $(RUN) \
		--category $(word 1,$(subst /, ,$*)) --fold $(patsubst fold%,%,$(word 2,$(subst /, ,$*)))

predict: $(STAMP)
	$(PY) -m pipeline.predict --output $(OUTPUT) $(CFG_ARGS) --run $(RUN)

ensemble: $(STAMP)
	$(PY) -m pipeline.ensemble --output $(OUTPUT) $(CFG_ARGS) --run $(RUN)

stack: $(STAMP)
	$(PY) -m pipeline.stack --output $(OUTPUT) $(CFG_ARGS) --run $(RUN)

submit: $(STAMP)
	$(PY) -m pipeline.submit --output $(OUTPUT) $(CFG_ARGS) --run $(RUN)

score: $(STAMP)
	$(PY) -m pipeline.score --output $(OUTPUT) $(CFG_ARGS) --run $(RUN)

report: $(STAMP)
	$(PY) -m pipeline.report --output $(OUTPUT) $(CFG_ARGS) --run $(RUN)

# ------------------------------------------------------------------ whole chain
demo: $(STAMP)
	@if ! ls $(INPUT)/*/Annotations/*.csv >/dev/null 2>&1; then $(MAKE) --no-print-directory data; fi
	@$(MAKE) --no-print-directory preprocess
	@$(MAKE) --no-print-directory baseline
	@$(MAKE) --no-print-directory -j$(DEMO_JOBS) train-all
	@$(MAKE) --no-print-directory predict ensemble
	@$(MAKE) --no-print-directory stack
	@$(MAKE) --no-print-directory submit score report
	@echo "demo done: submission $(OUTPUT)/submission.csv, leaderboard $(OUTPUT)/leaderboard.csv," \
		"report $(OUTPUT)/report/index.html"

DEMO_JOBS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) -m pipeline.bench --output $(OUTPUT) --mode $(BENCH_MODE)

clean:
	rm -rf $(OUTPUT)/prep $(OUTPUT)/runs $(OUTPUT)/report $(OUTPUT)/submission.csv $(OUTPUT)/leaderboard.csv
