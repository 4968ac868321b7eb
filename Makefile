# Thin wrapper over CMake; the two commands of README.md.
BUILD ?= build
.PHONY: all build run test bench check clean
all: build

build:
	@engine/scripts/deps.sh run
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD) -j2

run: build
	BUILD_DIR=$(BUILD) engine/scripts/run.sh

test:
	tests/tools/run-tests.sh

bench: build
	@engine/scripts/deps.sh bench
	tests/bench/run.sh

check: build
	$(BUILD)/jollyjet check

clean:
	rm -rf build build-asan
