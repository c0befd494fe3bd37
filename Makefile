# kdpipe: the distillation pipeline as Make targets, one per artifact.
#
#   make demo                      the whole pipeline, offline, on the bundled example
#   make dry-run                   what the teacher will cost (expansion and labelling), sending nothing
#   make test                      the test suite
#   make loop ROUNDS=2             then rounds of probe -> expand the hard questions -> label -> train again
#
# To run it on your own task, copy this file and set the variables below, e.g.
#   make eval SRC=my_questions.jsonl TEACHER_MODEL=gpt-4o-mini BASE_URL=https://api.openai.com/v1 \
#        STUDENT=Qwen/Qwen2.5-0.5B-Instruct TRAIN_FLAGS="--epochs 3" WORK=runs/mytask
# Each target reruns when one of its inputs (data, prompt files) or one of the settings that
# shape it changed ($(WORK)/.flags/ holds each stage's settings); the teacher cache makes a
# rerun of `generate` free for requests already answered. `make clean` keeps that cache.

# ------------------------------------------------------------------ what to distil
SRC            ?= data/example/questions.jsonl
WORK           ?= work
EVAL_FRAC      ?= 0.15
TASK           ?= numeric
SEED_FLAGS     ?=

# ------------------------------------------------------------------ the teacher
# BASE_URL empty: the demo's loopback teacher, with the scripted answers in TEACHER_SCRIPT,
# is started for each teacher step and stopped after it. It answers only as the demo's own
# model id: with any other TEACHER_MODEL, set BASE_URL (the run stops and says so otherwise).
DEMO_TEACHER_MODEL := loopback-teacher
TEACHER_MODEL  ?= $(DEMO_TEACHER_MODEL)
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
# STYLE=socratic labels with the Socratic prompt (sub-questions and answers) instead.
LABEL_PROMPT   ?= $(if $(filter socratic,$(STYLE)),prompts/socratic.txt,prompts/$(TASK).txt)
EXPAND_PROMPT  ?= prompts/expand.txt
# MAX_USD: the most all teacher steps of this WORK may spend together (the pipeline's and every loop
# round's, reruns included), counted in SPEND_LEDGER, which every teacher step appends what it paid to;
# empty: no cap. A step that would pass it stops (what was paid stays in the cache): raise MAX_USD and rerun.
MAX_USD        ?=
SPEND_LEDGER   ?= $(CACHE).spend.jsonl
# GENERATE_FLAGS go to both teacher steps; EXPAND_FLAGS and LABEL_FLAGS to one each.
GENERATE_FLAGS ?=
EXPAND_FLAGS   ?=
LABEL_FLAGS    ?=
# LOGPROBS=K (1-20): keep the teacher's K most likely tokens per answer token; with STYLE=kd, train
# distils on them (sparse KD: --kd-alpha, --kd-temperature, --kd-top-k in TRAIN_FLAGS).
LOGPROBS       ?=
# RATIONALIZE=1: between label and filter, the questions whose every answer missed gold are asked again
# with the gold answer as a hint (generate --mode rationalize). COUNTERFACTUAL=N: N minimal edits per seed
# question that change its answer (generate --mode counterfactual), labelled with the other questions.
RATIONALIZE    ?= 0
COUNTERFACTUAL ?= 0
# TEACHER_DIR: a local Hugging Face model served as the teacher (teacher serve --model) instead of TEACHER_SCRIPT.
TEACHER_DIR    ?=

# ------------------------------------------------------------------ filtering and formatting
FILTER_FLAGS   ?=
STYLE          ?= dss
# ICL_SHOTS=K: in-context distillation, K demonstrations in every training prompt and at eval.
ICL_SHOTS      ?=
FORMAT_FLAGS   ?=

# ------------------------------------------------------------------ the student
# The default is the demo's tiny randomly initialised model built from the example data
# (digits are single tokens), trained fully (--full: LoRA on random weights learns next to
# nothing); set STUDENT to a model id or folder for real work (LoRA by default).
DEMO_STUDENT    = $(WORK)/tiny-student
STUDENT        ?= $(DEMO_STUDENT)
RATIONALE_WEIGHT ?= 1.0
BASELINE       ?= $(STUDENT)
SCORE_TEACHER  ?= 1
IS_DEMO_STUDENT = $(filter $(DEMO_STUDENT),$(STUDENT))
# White-box distillation: TEACHER_CKPT, a teacher checkpoint (folder or model id) with the
# student's tokenizer, makes train distil from its logits after format; KD offline|on-policy,
# KD_FLAGS for the rest (--divergence reverse, --beta 0.5, --on-policy-frac 0.5, --kd-alpha ...).
TEACHER_CKPT   ?=
KD             ?= offline
KD_FLAGS       ?=
# LAUNCH: a launcher that starts train on several processes/GPUs, e.g.
#   LAUNCH="accelerate launch --config_file configs/fsdp.yaml"   (configs/: ddp, fsdp, deepspeed_zero3)
#   LAUNCH="torchrun --nproc_per_node 2"                          (2 CPU processes over gloo without a GPU)
# It prefixes `-m kdpipe train` (the launcher's own Python runs kdpipe; $(BIN) comes first on PATH);
# TRAIN_FLAGS' --batch-size is then per process.
LAUNCH         ?=

# ================================================================== the demo's tuning
# Used only while STUDENT is the demo's tiny student: a random 2-layer model of width 128,
# fully trained on a CPU in minutes. Nothing here reaches a real student.
DEMO_MAX_STEPS     ?= 800
DEMO_LEARNING_RATE ?= 3e-3
# ICL_SHOTS: prompts carry demonstrations; STYLE=socratic: answers are sub-questions and their answers.
DEMO_TRAIN_FLAGS   ?= --full --batch-size 32 --max-length $(if $(ICL_SHOTS),512,128) --eval-every 200 --save-every 400 --log-every 50
DEMO_EVAL_FLAGS    ?= --max-new-tokens $(if $(filter socratic,$(STYLE)),96,16)
DEMO_TINY_FLAGS    ?= --layers 2 --hidden 128 --heads 4
# ================================================================== end of the demo's tuning

# A real student gets kdpipe's own defaults: 3 epochs, learning rate 2e-4 (LoRA), max length
# 1024, eval's answer length by task. MAX_STEPS trains by steps instead; not with --epochs.
MAX_STEPS      ?= $(if $(IS_DEMO_STUDENT),$(DEMO_MAX_STEPS))
LEARNING_RATE  ?= $(if $(IS_DEMO_STUDENT),$(DEMO_LEARNING_RATE))
TRAIN_FLAGS    ?= $(if $(IS_DEMO_STUDENT),$(DEMO_TRAIN_FLAGS))
EVAL_FLAGS     ?= $(if $(IS_DEMO_STUDENT),$(DEMO_EVAL_FLAGS))

# ------------------------------------------------------------------ tools
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
KDPIPE  ?= $(BIN)/kdpipe
INSTALLED := $(VENV)/.installed

.PHONY: help install test test-all demo loop dry-run seeds expand label filter format train eval clean clean-cache gpu-wheels
.DELETE_ON_ERROR:

help:
	@echo "make install      build $(VENV) from nothing (pinned versions, CPU torch)"
	@echo "make test         run the test suite (installs first if needed)"
	@echo "make test-all     also run the slow end-to-end tests"
	@echo "make demo         run the whole pipeline offline on the bundled example"
	@echo "make eval         run the pipeline up to the scorecard (same as demo, with your variables)"
	@echo "make loop         the pipeline, then ROUNDS=$(ROUNDS) rounds on the student's mistakes; a scorecard"
	@echo "make dry-run      estimate what the teacher steps will cost; sends nothing"
	@echo "make clean        remove $(WORK)/ but the teacher cache $(CACHE)"
	@echo "make clean-cache  remove the teacher cache (answers in it are paid for again)"
	@echo "make gpu-wheels   download the wheels bench/gpu_check.sh carries to an offline GPU machine"

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

# ------------------------------------------------------------------ settings as inputs
# Each stage lists a file $(WORK)/.flags/STAGE holding the settings that shape its output;
# the file is rewritten (so made newer than the output) only when they change. Same
# settings: nothing reruns; SAMPLES changed: label and what follows it; STYLE: format on.
FLAGS_DIR = $(WORK)/.flags
NO_PIPELINE_GOALS := help install test test-all clean clean-cache
differs = $(subst x$(strip $(1))x,,x$(strip $(2))x)$(subst x$(strip $(2))x,,x$(strip $(1))x)
ifeq ($(filter-out $(NO_PIPELINE_GOALS),$(or $(MAKECMDGOALS),help)),)
flags =
else
flags = $(if $(call differs,$(file <$(FLAGS_DIR)/$(1)),$(1): $(2)),$(shell mkdir -p $(FLAGS_DIR))$(file >$(FLAGS_DIR)/$(1),$(1): $(strip $(2))))$(FLAGS_DIR)/$(1)
# A settings file removed after it was written (`make clean eval`): its stage reruns.
$(FLAGS_DIR)/%: ;
ifneq ($(filter --dry-run,$(GENERATE_FLAGS) $(EXPAND_FLAGS) $(LABEL_FLAGS)),)
$(error --dry-run in GENERATE_FLAGS writes nothing for the next step to read: run `make dry-run` instead)
endif
ifneq ($(and $(MAX_USD),$(filter --max-usd --max-usd=%,$(GENERATE_FLAGS) $(EXPAND_FLAGS) $(LABEL_FLAGS))),)
$(error MAX_USD=$(MAX_USD) and --max-usd in GENERATE_FLAGS: give one of them (MAX_USD caps all teacher steps together))
endif
endif

# ------------------------------------------------------------------ the pipeline
# Runs a kdpipe command against the teacher: BASE_URL when set, else the demo's loopback
# teacher started for this command alone (only as the demo's model: see TEACHER_MODEL).
# $(2): files to remove when the command ends, however it ends.
define with_teacher
	@set -e; trap 'rm -f $(2)' EXIT; if [ -n "$(BASE_URL)" ]; then url="$(BASE_URL)"; else \
	  if [ "$(TEACHER_MODEL)" != "$(DEMO_TEACHER_MODEL)" ]; then \
	    echo "make: TEACHER_MODEL=$(TEACHER_MODEL) needs BASE_URL=<its endpoint>: without BASE_URL only the demo's scripted loopback teacher answers, as TEACHER_MODEL=$(DEMO_TEACHER_MODEL)" >&2; \
	    exit 2; fi; \
	  ready=$(WORK)/.teacher-url; rm -f $$ready; \
	  $(KDPIPE) teacher serve --port 0 $(if $(TEACHER_DIR),--model $(TEACHER_DIR),--script $(TEACHER_SCRIPT)) \
	    --ready-file $$ready >/dev/null & pid=$$!; \
	  trap "kill $$pid 2>/dev/null; rm -f $(2)" EXIT; \
	  for i in $$(seq 300); do [ -s $$ready ] && break; sleep 0.1; done; \
	  [ -s $$ready ] || { echo "loopback teacher did not start" >&2; exit 1; }; \
	  url=$$(cat $$ready); fi; \
	echo "$(1) --base-url $$url"; $(1) --base-url $$url
endef

# The teacher: who answers (the endpoint, or the demo's script) is a setting of every teacher step.
TEACHER_DEP   = $(if $(BASE_URL)$(TEACHER_DIR),,$(TEACHER_SCRIPT))
TEACHER_SHAPE = $(TEACHER_MODEL) at $(or $(BASE_URL),the loopback with $(or $(TEACHER_DIR),$(TEACHER_SCRIPT))) --max-tokens $(MAX_TOKENS) $(GENERATE_FLAGS)
TEACHER_ARGS  = --model $(TEACHER_MODEL) --api-key-env $(API_KEY_ENV) --cache $(CACHE) \
                --concurrency $(CONCURRENCY) --max-tokens $(MAX_TOKENS) --spend-ledger $(SPEND_LEDGER) \
                $(if $(MAX_USD),--max-usd $(MAX_USD)) $(GENERATE_FLAGS)
SEED_ARGS   = --eval-frac $(EVAL_FRAC) --task $(TASK) $(SEED_FLAGS)
EXPAND_ARGS = --mode expand --num-new $(NUM_NEW) --prompt $(EXPAND_PROMPT) $(EXPAND_FLAGS)
LABEL_ARGS  = --mode label --samples $(SAMPLES) --temperature $(TEMPERATURE) --prompt $(LABEL_PROMPT) \
              $(if $(LOGPROBS),--logprobs $(LOGPROBS)) $(LABEL_FLAGS)
FILTER_ARGS = $(FILTER_FLAGS)
FORMAT_ARGS = --style $(STYLE) $(if $(ICL_SHOTS),--icl-shots $(ICL_SHOTS)) $(FORMAT_FLAGS)
# --epochs in TRAIN_FLAGS trains by epochs: the demo's MAX_STEPS is then left out, and one set
# on the command line is refused (train would refuse both together).
EPOCHS_GIVEN = $(filter --epochs --epochs=%,$(TRAIN_FLAGS))
STEPS_ARG = $(if $(EPOCHS_GIVEN),$(if $(filter command line environment,$(origin MAX_STEPS)),$(error \
            MAX_STEPS=$(MAX_STEPS) and --epochs in TRAIN_FLAGS: give one of them)),$(if $(MAX_STEPS),--max-steps $(MAX_STEPS)))
TRAIN_ARGS = --rationale-weight $(RATIONALE_WEIGHT) $(STEPS_ARG) \
             $(if $(LEARNING_RATE),--learning-rate $(LEARNING_RATE)) $(TRAIN_FLAGS) \
             $(if $(TEACHER_CKPT),--teacher-model $(TEACHER_CKPT) --kd $(KD) $(KD_FLAGS))
TRAIN_CMD  = $(if $(LAUNCH),PATH="$(abspath $(BIN)):$$PATH" $(LAUNCH) -m kdpipe,$(KDPIPE)) train
EVAL_ARGS  = --baseline $(BASELINE) $(EVAL_FLAGS)
EVAL_SHAPE = $(EVAL_ARGS) $(if $(filter 1,$(SCORE_TEACHER)),teacher $(TEACHER_SHAPE) $(LABEL_PROMPT))

# 1. seed: questions with gold answers; a held-out eval split never seen in training.
$(WORK)/seeds.jsonl: $(SRC) $(call flags,seed,$(SRC) $(SEED_ARGS)) $(INSTALLED)
	$(KDPIPE) seed $(SRC) -o $@ --eval-out $(WORK)/eval.jsonl $(SEED_ARGS)
$(WORK)/eval.jsonl: $(WORK)/seeds.jsonl

# 2a. generate --mode expand: the teacher writes new questions in the style of the seeds.
$(WORK)/expanded.jsonl: $(WORK)/seeds.jsonl $(EXPAND_PROMPT) $(TEACHER_DEP) $(call flags,expand,$(TEACHER_SHAPE) $(EXPAND_ARGS))
	$(call with_teacher,$(KDPIPE) generate $< -o $@ $(EXPAND_ARGS) $(TEACHER_ARGS))

# 2c. generate --mode counterfactual: minimal edits of the seeds that change their answers (COUNTERFACTUAL=N).
CF_ARGS = --mode counterfactual --samples $(COUNTERFACTUAL)
$(WORK)/counterfactual.jsonl: $(WORK)/seeds.jsonl $(TEACHER_DEP) $(call flags,counterfactual,$(TEACHER_SHAPE) $(CF_ARGS))
	$(call with_teacher,$(KDPIPE) generate $< -o $@ $(CF_ARGS) $(TEACHER_ARGS))

# The questions the teacher labels: the seeds, the new questions (NUM_NEW=0: none) and the edits.
EXPANDED = $(if $(filter 0,$(NUM_NEW)),,$(WORK)/expanded.jsonl)
COUNTERFACTUALS = $(if $(filter 0,$(COUNTERFACTUAL)),,$(WORK)/counterfactual.jsonl)
$(WORK)/questions.jsonl: $(WORK)/seeds.jsonl $(EXPANDED) $(COUNTERFACTUALS)
	cat $^ > $@.tmp && mv $@.tmp $@ || { rm -f $@.tmp; exit 1; }

# 2b. generate --mode label: several rationales per question (Fine-tune-CoT).
$(WORK)/teacher.jsonl: $(WORK)/questions.jsonl $(LABEL_PROMPT) $(TEACHER_DEP) $(call flags,label,$(TEACHER_SHAPE) $(LABEL_ARGS))
	$(call with_teacher,$(KDPIPE) generate $< -o $@ $(LABEL_ARGS) $(TEACHER_ARGS))

# 2d. generate --mode rationalize (RATIONALIZE=1): what filter would reject as gold_mismatch, asked again.
$(WORK)/rationalized.jsonl: $(WORK)/teacher.jsonl $(TEACHER_DEP) $(call flags,rationalize,$(TEACHER_SHAPE))
	$(call with_teacher,$(KDPIPE) generate $< -o $@ --mode rationalize $(TEACHER_ARGS))
TEACHER_OUT = $(WORK)/$(if $(filter 1,$(RATIONALIZE)),rationalized,teacher).jsonl

# 3. filter: drop failed, wrong (gold) or minority (vote) answers, duplicates, eval overlap.
$(WORK)/filtered.jsonl: $(TEACHER_OUT) $(WORK)/eval.jsonl $(call flags,filter,$(FILTER_ARGS))
	$(KDPIPE) filter $< -o $@ --against $(WORK)/eval.jsonl --rejected $(WORK)/rejected.jsonl \
	  --report $(WORK)/filter-report.json $(FILTER_ARGS)

# 4. format: SFT rows in the chosen style (dss: predict/explain tasks; cot; label; gold; kd: the teacher's
#    text with its per-token top-K, from LOGPROBS).
$(WORK)/sft.jsonl: $(WORK)/filtered.jsonl $(call flags,format,$(FORMAT_ARGS))
	$(KDPIPE) format $< -o $@ $(FORMAT_ARGS)

# The tiny demo student, built only when STUDENT is left at its default.
$(WORK)/tiny-student/config.json: $(SRC) $(TEACHER_SCRIPT) $(INSTALLED) $(call flags,tiny,$(DEMO_TINY_FLAGS))
	$(KDPIPE) tiny-student $(WORK)/tiny-student --corpus $(TEACHER_SCRIPT) $(DEMO_TINY_FLAGS)

STUDENT_DEP = $(if $(IS_DEMO_STUDENT),$(WORK)/tiny-student/config.json)

# 5. train: LoRA SFT (with TEACHER_CKPT: distillation from its logits); train_config.json is written last.
$(WORK)/student/train_config.json: $(WORK)/sft.jsonl $(STUDENT_DEP) $(wildcard $(TEACHER_CKPT)/config.json) \
                                   $(call flags,train,$(STUDENT) $(TRAIN_ARGS) $(if $(LAUNCH),launched by $(LAUNCH)))
	$(TRAIN_CMD) $< -o $(WORK)/student --student $(STUDENT) --overwrite $(TRAIN_ARGS)

# 6. eval: the student against the untrained baseline and the teacher on the held-out questions.
# Under `make demo` the scorecard is printed once, by the demo target.
EVAL_CMD = $(KDPIPE) eval $< --model $(WORK)/student -o $@ $(EVAL_ARGS)
$(WORK)/eval.json: $(WORK)/eval.jsonl $(WORK)/student/train_config.json $(call flags,eval,$(EVAL_SHAPE)) \
                   $(if $(filter 1,$(SCORE_TEACHER)),$(LABEL_PROMPT) $(TEACHER_DEP))
ifeq ($(SCORE_TEACHER),1)
	$(call with_teacher,$(EVAL_CMD) --teacher $(TEACHER_MODEL) --teacher-prompt $(LABEL_PROMPT) --api-key-env $(API_KEY_ENV) --cache $(CACHE) --spend-ledger $(SPEND_LEDGER) $(if $(MAX_USD),--max-usd $(MAX_USD)))
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

# The scorecard once: `kdpipe eval` prints it when it runs; when eval.json was already up to
# date, the demo prints the saved one.
ifneq ($(filter demo,$(MAKECMDGOALS)),)
DEMO_STARTED := $(shell mkdir -p $(WORK) && touch $(WORK)/.demo-started && echo $(WORK)/.demo-started)
endif
demo: $(WORK)/eval.json
	@[ -n "$$(find $(WORK)/eval.json -newer $(DEMO_STARTED))" ] || { echo; cat $(WORK)/eval.md; }
	@rm -f $(DEMO_STARTED)
	@echo
	@echo "Artifacts in $(WORK)/ (each with a .meta.json beside it):"
	@echo "  seeds.jsonl eval.jsonl     seed questions and held-out eval questions"
	@echo "  expanded.jsonl             new questions written by the teacher"
	@echo "  teacher.jsonl              teacher rationales and answers (cache: $(CACHE))"
	@echo "  filtered.jsonl rejected.jsonl filter-report.json"
	@echo "  sft.jsonl                  training rows ($(STYLE) style)"
	@echo "  student/                   weights (LoRA adapter or full), tokenizer, config, metrics, loss curve"
	@echo "  eval.json eval.md eval.predictions.jsonl   the scorecard"

# ------------------------------------------------------------------ the loop (Lion, Jiang et al. 2023)
# Round 0 is the pipeline above. Round N (in $(WORK)/round-N/): probe the last student on the
# training questions so far (never the eval questions) -> hard.jsonl; the teacher writes
# LOOP_NEW new questions like the hard ones (prompts/expand_hard.txt) -> label -> filter
# against the eval questions and every earlier round's data -> format -> train -> eval.
# LOOP_FROM=base (the default) trains each round from STUDENT on all rounds' data: a plain,
# reproducible train run whose score does not depend on the path taken, where old mistakes
# cannot compound. LOOP_FROM=last continues from the last round's student (train --resume-from)
# on the round's new data alone: cheaper, at the risk of drifting from what earlier rounds taught.
# Stopped anywhere, `make loop` again redoes only what is missing, and the teacher cache answers
# what was already paid for; MAX_USD caps the teacher steps of all rounds together. The loop's
# settings are tracked like the pipeline's: a changed LOOP_NEW reruns each round from its expansion.
ROUNDS      ?= 2
LOOP_NEW    ?= $(NUM_NEW)
LOOP_FROM   ?= base
# PROBE_MAX: most hard questions a round expands from (empty: all it finds); PROBE_EASY: easy
# ones added, as a share of those; PROBE_FLAGS: any other probe flags (--pool N, --seed S).
PROBE_MAX   ?=
PROBE_EASY  ?= 0.1
PROBE_FLAGS ?=
PROBE_ARGS   = $(if $(PROBE_MAX),--max $(PROBE_MAX)) --easy-share $(PROBE_EASY) $(PROBE_FLAGS)
LOOP_EXPAND_ARGS = --mode expand --num-new $(LOOP_NEW) $(EXPAND_FLAGS)
ROUND_LIST   = $(shell seq 1 $(ROUNDS))
round_dir    = $(if $(filter 0,$(1)),$(WORK),$(WORK)/round-$(1))
# The training records of rounds 0..N.
train_files  = $(foreach k,$(shell seq 0 $(1)),$(call round_dir,$(k))/filtered.jsonl)
# What round N trains on, and from what (LOOP_FROM).
loop_data    = $(if $(filter last,$(LOOP_FROM)),$(WORK)/round-$(1)/filtered.jsonl,$(WORK)/round-$(1)/all.jsonl)
loop_start   = $(if $(filter last,$(LOOP_FROM)),--resume-from $(call round_dir,$(1))/student)

define LOOP_ROUND
$(WORK)/round-$(1)/pool.jsonl: $(call train_files,$(2))
	mkdir -p $$(@D) && cat $$^ > $$@.tmp && mv $$@.tmp $$@ || { rm -f $$@.tmp; exit 1; }
$(WORK)/round-$(1)/hard.jsonl: $(WORK)/round-$(1)/pool.jsonl $(call round_dir,$(2))/student/train_config.json $(WORK)/eval.jsonl \
                               $$(call flags,probe,$$(PROBE_ARGS))
	$$(KDPIPE) probe $$< --model $(call round_dir,$(2))/student -o $$@ --against $(WORK)/eval.jsonl --round $(1) $$(PROBE_ARGS) \
	  $$(if $$(filter --judge --judge=%,$$(PROBE_FLAGS)),--judge-spend-ledger $$(SPEND_LEDGER) $$(if $$(MAX_USD),--judge-max-usd $$(MAX_USD)))
$(WORK)/round-$(1)/expanded.jsonl: $(WORK)/round-$(1)/hard.jsonl prompts/expand_hard.txt $$(TEACHER_DEP) \
                                   $$(call flags,loop-expand,$$(TEACHER_SHAPE) $$(LOOP_EXPAND_ARGS))
	$$(call with_teacher,$$(KDPIPE) generate $$< -o $$@ $$(LOOP_EXPAND_ARGS) --round $(1) $$(TEACHER_ARGS))
$(WORK)/round-$(1)/teacher.jsonl: $(WORK)/round-$(1)/expanded.jsonl $$(LABEL_PROMPT) $$(TEACHER_DEP) \
                                  $$(call flags,label,$$(TEACHER_SHAPE) $$(LABEL_ARGS))
	$$(call with_teacher,$$(KDPIPE) generate $$< -o $$@ $$(LABEL_ARGS) $$(TEACHER_ARGS))
$(WORK)/round-$(1)/filtered.jsonl: $(WORK)/round-$(1)/teacher.jsonl $(WORK)/eval.jsonl $(call train_files,$(2)) \
                                   $$(call flags,filter,$$(FILTER_ARGS))
	$$(KDPIPE) filter $$< -o $$@ $$(foreach f,$(WORK)/eval.jsonl $(call train_files,$(2)),--against $$(f)) \
	  --rejected $(WORK)/round-$(1)/rejected.jsonl --report $(WORK)/round-$(1)/filter-report.json $$(FILTER_ARGS)
$(WORK)/round-$(1)/all.jsonl: $(call train_files,$(1))
	cat $$^ > $$@.tmp && mv $$@.tmp $$@ || { rm -f $$@.tmp; exit 1; }
$(WORK)/round-$(1)/sft.jsonl: $$(call loop_data,$(1)) $$(call flags,format,$$(FORMAT_ARGS)) $$(call flags,loop-from,$$(LOOP_FROM))
	$$(KDPIPE) format $$< -o $$@ $$(FORMAT_ARGS)
$(WORK)/round-$(1)/student/train_config.json: $(WORK)/round-$(1)/sft.jsonl $$(STUDENT_DEP) \
        $$(if $$(filter last,$$(LOOP_FROM)),$(call round_dir,$(2))/student/train_config.json) \
        $$(call flags,loop-train,$$(STUDENT) $$(TRAIN_ARGS) from $$(LOOP_FROM) $$(if $$(LAUNCH),launched by $$(LAUNCH)))
	$$(TRAIN_CMD) $$< -o $(WORK)/round-$(1)/student --student $$(STUDENT) --overwrite $$(TRAIN_ARGS) $$(call loop_start,$(2))
$(WORK)/round-$(1)/eval.json: $(WORK)/eval.jsonl $(WORK)/round-$(1)/student/train_config.json $$(call flags,loop-eval,$$(EVAL_FLAGS))
	$$(KDPIPE) eval $$< --model $(WORK)/round-$(1)/student -o $$@ -q $$(EVAL_FLAGS)
endef
ifneq ($(filter loop,$(MAKECMDGOALS)),)
ifeq ($(filter base last,$(LOOP_FROM)),)
$(error LOOP_FROM must be base (train each round from STUDENT on all rounds' data) or last (continue from the last round's student), not "$(LOOP_FROM)")
endif
$(foreach n,$(ROUND_LIST),$(eval $(call LOOP_ROUND,$(n),$(shell expr $(n) - 1))))
endif

loop: $(WORK)/eval.json $(foreach n,$(ROUND_LIST),$(WORK)/round-$(n)/eval.json)
	@echo
	@$(KDPIPE) loop-report $(WORK) --rounds $(ROUNDS) --spend-ledger $(SPEND_LEDGER) $(if $(MAX_USD),--max-usd $(MAX_USD))

# ------------------------------------------------------------------ cost before paying
# One estimate for the teacher steps of the whole run: expansion of NUM_NEW questions and the
# labelling of the seeds and of those questions (the seeds stand in for questions not yet
# written; once expanded.jsonl exists, its questions are priced). Seeding runs (it is local
# and free); nothing is sent to the teacher and nothing else is written.
DRY_EXPANDED = $(if $(filter 0,$(NUM_NEW)),,$(wildcard $(WORK)/expanded.jsonl))
DRY_QUESTIONS = $(WORK)/.dry-run-questions.jsonl
dry-run: $(WORK)/seeds.jsonl $(TEACHER_DEP)
	$(call with_teacher,$(if $(DRY_EXPANDED),cat $< $(DRY_EXPANDED) > $(DRY_QUESTIONS) && )$(KDPIPE) generate \
	  $(if $(DRY_EXPANDED),$(DRY_QUESTIONS),$<) -o $(WORK)/teacher.jsonl --dry-run $(LABEL_ARGS) \
	  $(if $(DRY_EXPANDED)$(filter 0,$(NUM_NEW)),,--expect-new $(NUM_NEW) --expand-prompt $(EXPAND_PROMPT)) \
	  $(TEACHER_ARGS),$(DRY_QUESTIONS))

# ------------------------------------------------------------------ cleaning
# The teacher cache holds answers that were paid for: clean keeps it, clean-cache removes it.
CACHE_IN_WORK = $(word 1,$(subst /, ,$(patsubst $(abspath $(WORK))/%,%,$(filter $(abspath $(WORK))/%,$(abspath $(CACHE))))))
clean:
	@if [ -d $(WORK) ]; then \
	  find $(WORK) -mindepth 1 -maxdepth 1 $(if $(CACHE_IN_WORK),! -name '$(CACHE_IN_WORK)*') -exec rm -rf {} +; \
	  echo "clean: emptied $(WORK)/$(if $(CACHE_IN_WORK), but for the teacher cache $(CACHE) (make clean-cache removes it))"; fi

clean-cache: $(INSTALLED)
	$(KDPIPE) teacher clear-cache $(CACHE)

# ------------------------------------------------------------------ GPU check
# The wheels bench/gpu_check.sh installs on an offline GPU machine (Python GPU_PY there),
# then a check that they install from wheels/ alone into an empty folder.
GPU_PY   ?= 3.12
GPU_PLATFORMS := $(foreach p,manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64,--platform $(p))
GPU_PIP  := --no-deps --only-binary=:all: --python-version $(GPU_PY) --implementation cp $(GPU_PLATFORMS)
gpu-wheels:
	$(BIN)/python -m pip download --quiet --disable-pip-version-check $(GPU_PIP) -d wheels -r bench/gpu-wheels.txt
	rm -rf wheels/.installed && $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-index \
	  --find-links wheels --target wheels/.installed $(GPU_PIP) -r bench/gpu-wheels.txt && rm -rf wheels/.installed
	@echo "wheels/: $$(ls wheels/*.whl | wc -l) wheels, $$(du -sh wheels | cut -f1); carry it with the working tree"
