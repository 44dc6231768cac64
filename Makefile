# dsv4 — GNU Makefile.
#   make            library (static + shared), CLI build/dsv4, test runner; CUDA objects when nvcc exists
#   make test       build and run every test (GPU cases skip without a GPU)
#   make asan       CPU suite under AddressSanitizer + UBSan (build-asan/)
#   make fuzz       libFuzzer targets (clang), each run for FUZZ_SECONDS
#   make deps       install build dependencies (Debian) and the Python test oracles (pip)
#   make SM=100a    compile the CUDA objects for Blackwell instead of Hopper (build-sm100a/)

SM        ?= 90a
SUDO      ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CC        ?= gcc
NVCC      ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
ifeq ($(SM),90a)
BUILD     ?= build
else
BUILD     ?= build-sm$(SM)
endif
ifdef DSV4_NO_CUDA
NVCC :=
endif

OPT      ?= -O2
CPPFLAGS += -Iinclude -Isrc -D_GNU_SOURCE
CFLAGS   += -std=c11 $(OPT) -g -fPIC -Wall -Wextra -Wno-unused-parameter -Wshadow -Wno-format-truncation -pthread $(SANFLAGS)
LDLIBS   += -lcjson -lpthread -lm

SRC_C  := $(sort $(wildcard src/*/*.c))
SRC_CU := $(sort $(wildcard src/cuda/*.cu))
OBJ    := $(SRC_C:%.c=$(BUILD)/obj/%.o)
ifneq ($(NVCC),)
CPPFLAGS  += -DDSV4_HAVE_CUDA=1 -I$(CUDA_HOME)/include
NVCCFLAGS ?= -std=c++17 $(OPT) -g -Xcompiler -fPIC -Iinclude -Isrc -DDSV4_HAVE_CUDA=1 -DDSV4_CUDA_ARCH_$(SM)=1 \
             -gencode=arch=compute_$(SM),code=sm_$(SM) -lineinfo
OBJ    += $(SRC_CU:%.cu=$(BUILD)/obj/%.o)
LDLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
endif

TEST_SRC := tests/runner.c tests/fixtures.c tests/gpu_harness.c $(sort $(wildcard tests/test_*.c))
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/obj/%.o)

LIB_A  := $(BUILD)/libdsv4.a
LIB_SO := $(BUILD)/libdsv4.so
CLI    := $(BUILD)/dsv4
RUNNER := $(BUILD)/test_runner

BENCH_SRC := $(sort $(wildcard bench/bench_*.c))
BENCH     := $(BENCH_SRC:bench/%.c=$(BUILD)/%)

.PHONY: all test asan fuzz deps devdeps clean tiny bench
all: $(LIB_A) $(LIB_SO) $(CLI) $(RUNNER)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) $(NVCCFLAGS_EXTRA) -MMD -MP -c $< -o $@

$(LIB_A): $(OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIB_SO): $(OBJ)
	$(CC) -shared $(SANFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

$(CLI): $(BUILD)/obj/tools/dsv4.o $(LIB_A)
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

# Tests link the objects directly so that internal (non-API) functions are reachable.
$(RUNNER): $(TEST_OBJ) $(LIB_A)
	$(CC) $(CFLAGS) -o $@ $(TEST_OBJ) $(LIB_A) $(LDFLAGS) $(LDLIBS)

test: all
	DSV4_CLI=./$(CLI) ./$(RUNNER) $(T)

# Benchmarks (GPU programs printing JSON); built with `make bench`, run on a GPU machine.
$(BUILD)/bench_%: $(BUILD)/obj/bench/bench_%.o $(BUILD)/obj/bench/stream_read.o $(LIB_A)
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)
bench: $(BENCH)

# The main job on the embedded tiny model (the README's first command).
tiny: all
	./$(CLI) make-tiny $(BUILD)/tiny-model
	./$(CLI) inspect $(BUILD)/tiny-model
	./$(CLI) generate --model $(BUILD)/tiny-model --ids 1,2,3,4 -n 16

asan:
	$(MAKE) DSV4_NO_CUDA=1 BUILD=build-asan OPT=-O1 \
	  SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  build-asan/test_runner build-asan/dsv4
	DSV4_CLI=./build-asan/dsv4 ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  ./build-asan/test_runner $(T)

FUZZ_SECONDS ?= 30
FUZZ_TARGETS := $(patsubst fuzz/%.c,build-fuzz/%,$(sort $(wildcard fuzz/fuzz_*.c)))
FUZZ_LIB_SRC := $(filter-out src/cuda/%,$(SRC_C))
build-fuzz/%: fuzz/%.c $(FUZZ_LIB_SRC)
	@mkdir -p build-fuzz
	clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined $(CPPFLAGS) -UDSV4_HAVE_CUDA -o $@ $< $(FUZZ_LIB_SRC) -lcjson -lpthread -lm
fuzz: $(FUZZ_TARGETS)
	@for t in $(FUZZ_TARGETS); do \
	  name=$$(basename $$t); mkdir -p build-fuzz/corpus-$$name; \
	  [ -d fuzz/seeds/$$name ] && cp -n fuzz/seeds/$$name/* build-fuzz/corpus-$$name/ 2>/dev/null; \
	  dict=""; [ -f fuzz/$$name.dict ] && dict="-dict=fuzz/$$name.dict"; \
	  if $$t -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -print_final_stats=1 $$dict \
	       build-fuzz/corpus-$$name > build-fuzz/$$name.log 2>&1; then \
	    echo "fuzz $$name: $$(grep -o 'Done [0-9]* runs in [0-9]* second(s)' build-fuzz/$$name.log), no crash, leak or UB"; \
	  else \
	    tail -40 build-fuzz/$$name.log; echo "fuzz $$name: FAILED (build-fuzz/$$name.log)"; exit 1; \
	  fi; \
	done

# Build dependencies (Debian) and the Python test oracles (independent implementations the
# tests compare against: numpy, ml_dtypes, safetensors); without the oracles those tests skip.
DEPS_APT := build-essential libcjson-dev clang libclang-rt-14-dev python3 python3-pip
DEPS_PIP := numpy ml_dtypes safetensors
deps:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(DEPS_APT) >/dev/null
	python3 -m pip install -q $(DEPS_PIP) 2>/dev/null || python3 -m pip install -q --break-system-packages $(DEPS_PIP)

# The GPU machine cannot reach package registries: fetch the Debian packages the build needs
# here, carry .devdeps/ with the device call, and let tests/gpu/run_device.sh unpack them.
devdeps:
	mkdir -p .devdeps && cd .devdeps && apt-get download libcjson1 libcjson-dev

clean:
	rm -rf build build-* 

-include $(OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/obj/tools/dsv4.d $(BENCH_SRC:%.c=$(BUILD)/obj/%.d)
