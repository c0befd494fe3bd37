# kdpipe: the distillation pipeline as Make targets, one per artifact.
#
#   make demo                      the whole pipeline, offline, on the bundled example
#   make test                      the test suite
#
# To run it on your own task, copy this file and set the variables below, e.g.
#   make eval SRC=my_questions.jsonl TEACHER_MODEL=gpt-4o-mini BASE_URL=https://api.openai.com/v1 \
#        STUDENT=Qwen/Qwen2.5-0.5B-Instruct TRAIN_FLAGS="--epochs 3" WORK=runs/mytask
# Each target reruns only when one of its inputs (data, prompt files) changed;
# the teacher cache makes a rerun of `generate` free for requests already answered.

# ------------------------------------------------------------------ what to distil
SRC            ?= data/example/questions.jsonl
WORK           ?= work
EVAL_FRAC      ?= 0.15

# ------------------------------------------------------------------ the teacher
# BASE_URL empty: a loopback teacher with the scripted answers in TEACHER_SCRIPT
# is started for each generate step and stopped after it (the offline demo).
TEACHER_MODEL  ?= loopback-teacher
BASE_URL       ?=
API_KEY_ENV    ?= OPENAI_API_KEY
TEACHER_SCRIPT ?= data/example/teacher.jsonl
CACHE          ?= $(WORK)/teacher-cache.sqlite
CONCURRENCY    ?= 32
SAMPLES        ?= 2
TEMPERATURE    ?= 0.7
MAX_TOKENS     ?= 512
# NUM_NEW: new questions asked of the teacher; 0 skips expansion (needed for multiple-choice tasks).
NUM_NEW        ?= 60
TASK           ?= numeric
LABEL_PROMPT   ?= prompts/$(TASK).txt
EXPAND_PROMPT  ?= prompts/expand.txt
GENERATE_FLAGS ?=

# ------------------------------------------------------------------ filtering and formatting
FILTER_FLAGS   ?=
STYLE          ?= dss
FORMAT_FLAGS   ?=

# ------------------------------------------------------------------ the student
# The default is a tiny randomly initialised model built from the example data
# (TINY_FLAGS: its size; digits are single tokens), trained fully (--full: LoRA
# on random weights learns next to nothing), so the demo trains in a few minutes
# on a CPU. Set STUDENT to a model id or folder, and TRAIN_FLAGS without --full
# for LoRA on a pretrained model.
STUDENT        ?= $(WORK)/tiny-student
TINY_FLAGS     ?= --layers 2 --hidden 128 --heads 4
RATIONALE_WEIGHT ?= 1.0
MAX_STEPS      ?= 800
LEARNING_RATE  ?= 3e-3
TRAIN_FLAGS    ?= --full --batch-size 32 --max-length 128 --eval-every 200 --save-every 400 --log-every 50
BASELINE       ?= $(STUDENT)
SCORE_TEACHER  ?= 1
EVAL_FLAGS     ?= --max-new-tokens 16

# ------------------------------------------------------------------ tools
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
KDPIPE  ?= $(BIN)/kdpipe
INSTALLED := $(VENV)/.installed

.PHONY: help install test test-all demo seeds expand label filter format train eval scorecard clean
.DELETE_ON_ERROR:

help:
	@echo "make install    build $(VENV) from nothing (pinned versions, CPU torch)"
	@echo "make test       run the test suite (installs first if needed)"
	@echo "make test-all   also run the slow end-to-end tests"
	@echo "make demo       run the whole pipeline offline on the bundled example"
	@echo "make eval       run the pipeline up to the scorecard (same as demo, with your variables)"
	@echo "make clean      remove $(WORK)/"

# ------------------------------------------------------------------ install
$(INSTALLED): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

install: $(INSTALLED)

test: install
	HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 $(BIN)/python -m pytest

test-all: install
	HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 $(BIN)/python -m pytest -m ''

# ------------------------------------------------------------------ the pipeline
# Runs a kdpipe command against the teacher: BASE_URL when set, else a loopback
# teacher started for this command alone.
define with_teacher
	@set -e; if [ -n "$(BASE_URL)" ]; then url="$(BASE_URL)"; else \
	  ready=$(WORK)/.teacher-url; rm -f $$ready; \
	  $(KDPIPE) teacher serve --port 0 --script $(TEACHER_SCRIPT) --ready-file $$ready & pid=$$!; \
	  trap "kill $$pid 2>/dev/null" EXIT; \
	  for i in $$(seq 300); do [ -s $$ready ] && break; sleep 0.1; done; \
	  [ -s $$ready ] || { echo "loopback teacher did not start" >&2; exit 1; }; \
	  url=$$(cat $$ready); fi; \
	echo "$(1) --base-url $$url"; $(1) --base-url $$url
endef

TEACHER_ARGS = --model $(TEACHER_MODEL) --api-key-env $(API_KEY_ENV) --cache $(CACHE) \
               --concurrency $(CONCURRENCY) --max-tokens $(MAX_TOKENS) $(GENERATE_FLAGS)

# 1. seed: questions with gold answers; a held-out eval split never seen in training.
$(WORK)/seeds.jsonl: $(SRC) $(INSTALLED)
	$(KDPIPE) seed $(SRC) -o $@ --eval-out $(WORK)/eval.jsonl --eval-frac $(EVAL_FRAC) --task $(TASK)
$(WORK)/eval.jsonl: $(WORK)/seeds.jsonl

# 2a. generate --mode expand: the teacher writes new questions in the style of the seeds.
$(WORK)/expanded.jsonl: $(WORK)/seeds.jsonl $(EXPAND_PROMPT)
	$(call with_teacher,$(KDPIPE) generate $< -o $@ --mode expand --num-new $(NUM_NEW) --prompt $(EXPAND_PROMPT) $(TEACHER_ARGS))

# The questions the teacher labels: the seeds and the new questions (NUM_NEW=0: the seeds alone).
EXPANDED := $(if $(filter 0,$(NUM_NEW)),,$(WORK)/expanded.jsonl)
$(WORK)/questions.jsonl: $(WORK)/seeds.jsonl $(EXPANDED)
	cat $^ > $@.tmp && mv $@.tmp $@

# 2b. generate --mode label: several rationales per question (Fine-tune-CoT).
$(WORK)/teacher.jsonl: $(WORK)/questions.jsonl $(LABEL_PROMPT)
	$(call with_teacher,$(KDPIPE) generate $< -o $@ --mode label --samples $(SAMPLES) --temperature $(TEMPERATURE) --prompt $(LABEL_PROMPT) $(TEACHER_ARGS))

# 3. filter: drop failed, wrong (gold) or minority (vote) answers, duplicates, eval overlap.
$(WORK)/filtered.jsonl: $(WORK)/teacher.jsonl $(WORK)/eval.jsonl
	$(KDPIPE) filter $< -o $@ --against $(WORK)/eval.jsonl --rejected $(WORK)/rejected.jsonl \
	  --report $(WORK)/filter-report.json $(FILTER_FLAGS)

# 4. format: SFT rows in the chosen style (dss: predict/explain tasks; cot; label; gold).
$(WORK)/sft.jsonl: $(WORK)/filtered.jsonl
	$(KDPIPE) format $< -o $@ --style $(STYLE) $(FORMAT_FLAGS)

# The tiny demo student, built only when STUDENT is left at its default.
$(WORK)/tiny-student/config.json: $(SRC) $(TEACHER_SCRIPT) $(INSTALLED)
	$(KDPIPE) tiny-student $(WORK)/tiny-student --corpus $(TEACHER_SCRIPT) $(TINY_FLAGS)

STUDENT_DEP := $(if $(filter $(WORK)/tiny-student,$(STUDENT)),$(WORK)/tiny-student/config.json)

# 5. train: LoRA SFT; the run directory's train_config.json is written last.
$(WORK)/student/train_config.json: $(WORK)/sft.jsonl $(STUDENT_DEP)
	$(KDPIPE) train $< -o $(WORK)/student --student $(STUDENT) --overwrite \
	  --rationale-weight $(RATIONALE_WEIGHT) --max-steps $(MAX_STEPS) --learning-rate $(LEARNING_RATE) $(TRAIN_FLAGS)

# 6. eval: the student against the untrained baseline and the teacher on the held-out questions.
EVAL_CMD = $(KDPIPE) eval $< --model $(WORK)/student --baseline $(BASELINE) -o $@ $(EVAL_FLAGS)
$(WORK)/eval.json: $(WORK)/eval.jsonl $(WORK)/student/train_config.json
ifeq ($(SCORE_TEACHER),1)
	$(call with_teacher,$(EVAL_CMD) --teacher $(TEACHER_MODEL) --teacher-prompt $(LABEL_PROMPT) --api-key-env $(API_KEY_ENV) --cache $(CACHE))
else
	$(EVAL_CMD)
endif

seeds: $(WORK)/seeds.jsonl
expand: $(WORK)/expanded.jsonl
label: $(WORK)/teacher.jsonl
filter: $(WORK)/filtered.jsonl
format: $(WORK)/sft.jsonl
train: $(WORK)/student/train_config.json
eval: $(WORK)/eval.json

demo: $(WORK)/eval.json
	@echo
	@cat $(WORK)/eval.md
	@echo
	@echo "Artifacts in $(WORK)/ (each with a .meta.json beside it):"
	@echo "  seeds.jsonl eval.jsonl     seed questions and held-out eval questions"
	@echo "  expanded.jsonl             new questions written by the teacher"
	@echo "  teacher.jsonl              teacher rationales and answers (cache: $(CACHE))"
	@echo "  filtered.jsonl rejected.jsonl filter-report.json"
	@echo "  sft.jsonl                  training rows ($(STYLE) style)"
	@echo "  student/                   weights (LoRA adapter or full), tokenizer, config, metrics, loss curve"
	@echo "  eval.json eval.md eval.predictions.jsonl   the scorecard"

clean:
	rm -rf $(WORK)
