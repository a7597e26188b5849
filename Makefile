# Every target creates .venv when it is missing, installs the pinned CPU torch wheel first
# (so the range in pyproject.toml never pulls a CUDA build), then the project with its dev tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.13.0
export SDL_VIDEODRIVER ?= dummy
export SDL_AUDIODRIVER ?= dummy

.PHONY: demo test test-slow lint bench bench-checkpoint bench-functions bench-traffic bench-lane-changes bench-physics \
	bench-physics-gpu figures clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e '.[dev,physics,rl,video]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/pace_car_gippo.py

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/sim_throughput.py --out docs/benchmarks.md

bench-checkpoint: $(STAMP)
	$(BIN)/python benchmarks/checkpoint_cost.py --out docs/reliability.md

bench-functions: $(STAMP)
	$(BIN)/python benchmarks/function_optimization.py --seeds 1 2 3 4 5

bench-traffic: $(STAMP)
	$(BIN)/python benchmarks/traffic.py

bench-lane-changes: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/lane_changes.py

# On CPU a stated fraction of the paper budget: Cartpole in full, Ant 10 %, Hopper 2.5 %.
bench-physics: $(STAMP)
	$(BIN)/python benchmarks/physics.py --epochs cartpole=500 ant=20 hopper=10

# The full paper budget (Cartpole 500, Ant and Hopper 2000 epochs) on a CUDA GPU, in a logdir of
# its own (a resumed run must keep its epoch count); needs a CUDA build of torch in the venv.
bench-physics-gpu: $(STAMP)
	$(BIN)/python benchmarks/physics.py --device cuda --logdir runs/physics_gpu

figures: $(STAMP)
	$(BIN)/python examples/demo.py --frame docs/images/pace_car_10lane.png --video docs/images/pace_car_10lane.gif --every 3 --width 640 --height 360

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
