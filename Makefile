# rotkv build. `make deps` installs the Debian/Ubuntu packages the build needs
# (`make deps-test`: and those the tests need; scripts/deps.sh);
# `make` builds the library and the CLI; `make test` builds and runs
# the whole test suite; `make test-asan` runs it under AddressSanitizer+UBSan;
# `make fuzz` builds the libFuzzer targets (clang) and `make fuzz-check` runs
# each for FUZZ_SECONDS (part of `make check`).
CC      ?= cc
# Cross builds (make CC=aarch64-linux-gnu-gcc): objects go to build-ARCH, and
# pkg-config reads the target's .pc files (Debian multiarch, /usr/lib/TRIPLET).
# (A cross build is one for another CPU architecture than cc's: clang's
# x86_64-pc-linux-gnu beside gcc's x86_64-linux-gnu is not one.)
TARGET  := $(shell $(CC) -dumpmachine 2>/dev/null)
TARGET_ARCH := $(firstword $(subst -, ,$(TARGET)))
ifneq ($(TARGET_ARCH),$(firstword $(subst -, ,$(shell cc -dumpmachine 2>/dev/null))))
BUILD   ?= build-$(TARGET_ARCH)
PKG_CONFIG ?= PKG_CONFIG_LIBDIR=/usr/lib/$(TARGET)/pkgconfig:/usr/share/pkgconfig pkg-config
endif
BUILD   ?= build
PKG_CONFIG ?= pkg-config
OPT     ?= -O2 -g
CFLAGS  += -std=c11 -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L $(OPT) -Wall -Wextra -Wshadow \
           -Wno-unused-parameter -pthread -Iinclude -Isrc $(shell $(PKG_CONFIG) --cflags libpcre2-8 2>/dev/null)
LDLIBS  += $(shell $(PKG_CONFIG) --libs libpcre2-8 2>/dev/null || echo -lpcre2-8) -lm -pthread
# rotkv serve: libmicrohttpd (HTTP) and cJSON (JSON)
CFLAGS  += $(shell $(PKG_CONFIG) --cflags libmicrohttpd libcjson 2>/dev/null)
LDLIBS  += $(shell $(PKG_CONFIG) --libs libmicrohttpd libcjson 2>/dev/null || echo -lmicrohttpd -lcjson)
TEST_LDLIBS = $(shell $(PKG_CONFIG) --libs cmocka 2>/dev/null || echo -lcmocka)
# rotkv pull / -hf: libcurl (HTTP) and libcrypto (SHA-256), for the rotkv binary only
TOOL_CFLAGS = $(shell $(PKG_CONFIG) --cflags libcurl libcrypto 2>/dev/null)
TOOL_LDLIBS = $(shell $(PKG_CONFIG) --libs libcurl libcrypto 2>/dev/null || echo -lcurl -lcrypto)

LIB_SRC   := $(sort $(wildcard src/*.c src/arch/*/*.c))
TOOL_SRC  := $(sort $(wildcard tools/*.c))
TEST_SRC  := $(sort $(wildcard tests/test_*.c))
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o)
TOOL_OBJ  := $(TOOL_SRC:%.c=$(BUILD)/%.o)
TEST_BIN  := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all deps deps-test deps-arm64 check check-arm64 test test-asan fuzz fuzz-check clean
all: $(BUILD)/rotkv

deps:
	sh scripts/deps.sh build
deps-test:
	sh scripts/deps.sh test
deps-arm64:
	sh scripts/deps.sh arm64

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/librotkv.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/rotkv: $(TOOL_OBJ) $(BUILD)/gen/calibration_text.o $(BUILD)/librotkv.a
	$(CC) $(CFLAGS) $^ $(TOOL_LDLIBS) $(LDLIBS) -o $@
$(BUILD)/tools/hf_pull.o: CFLAGS += $(TOOL_CFLAGS)

# the default calibration text of `rotkv calibrate`, compiled into the binary
$(BUILD)/gen/calibration_text.c: data/calibration.txt
	@mkdir -p $(dir $@)
	{ echo '/* generated from data/calibration.txt by the Makefile */'; echo '#include <stddef.h>'; \
	  echo 'const unsigned char rotkv_calibration_text[] = {'; \
	  od -An -v -tu1 $< | sed 's/^ *//; s/  */,/g; s/$$/,/'; \
	  echo '0};'; echo 'const size_t rotkv_calibration_text_len = sizeof rotkv_calibration_text - 1;'; } > $@
$(BUILD)/gen/calibration_text.o: $(BUILD)/gen/calibration_text.c
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/tests/testutil.o $(BUILD)/librotkv.a
	$(CC) $(CFLAGS) $^ $(TEST_LDLIBS) $(LDLIBS) -o $@

# Debian's aarch64-linux-gnu-gcc 12.2 stops with an internal compiler error
# (vect_transform_reduction) vectorizing test_round_trip_bounds' loop.
ifneq ($(findstring aarch64,$(TARGET)),)
$(BUILD)/tests/test_kv_codecs.o: CFLAGS += -fno-tree-loop-vectorize
endif

test: $(TEST_BIN) $(BUILD)/rotkv
	ROTKV_BIN=$(BUILD)/rotkv sh tests/run.sh $(TEST_BIN)

# The whole suite: optimized build, then again under ASan+UBSan.
check:
	$(MAKE) test
	$(MAKE) test-asan
	$(MAKE) fuzz-check

# Cross-built for Linux aarch64, the kernel-twin and golden tests under qemu at
# every aarch64 kernel level (scripts/check-arm64.sh).
check-arm64:
	MAKE="$(MAKE)" sh scripts/check-arm64.sh

test-asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" test

# libFuzzer targets (clang; fuzz/README.md). Every source they use is built
# once more with coverage instrumentation and ASan+UBSan into $(BUILD)/fuzz-obj;
# libmicrohttpd is not linked (the server's request parsing is in
# tools/server_request.c). `make fuzz-check` runs each target for FUZZ_SECONDS.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := gguf tokenizer chat_template server_request slot_file kv_calib
FUZZ_BIN     := $(FUZZ_TARGETS:%=$(BUILD)/fuzz_%)
FUZZ_CFLAGS  := -std=c11 -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L -g -O1 -fno-omit-frame-pointer \
                -fsanitize=address,undefined -fno-sanitize-recover=all -pthread -Iinclude -Isrc -Itools \
                $(shell $(PKG_CONFIG) --cflags libpcre2-8 libcjson 2>/dev/null)
FUZZ_LDLIBS  := $(shell $(PKG_CONFIG) --libs libpcre2-8 libcjson 2>/dev/null || echo -lpcre2-8 -lcjson) -lm -pthread
FUZZ_OBJ     := $(patsubst %.c,$(BUILD)/fuzz-obj/%.o,$(LIB_SRC) tools/server_engine.c tools/server_request.c)

fuzz: $(FUZZ_BIN)
$(BUILD)/fuzz-obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@
$(BUILD)/fuzz-obj/librotkv-fuzz.a: $(FUZZ_OBJ)
	rm -f $@ && ar rcs $@ $^
$(BUILD)/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_common.h $(BUILD)/fuzz-obj/librotkv-fuzz.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Wall -Wextra -Wshadow -Wno-unused-parameter -fsanitize=fuzzer $< \
	    $(BUILD)/fuzz-obj/librotkv-fuzz.a $(FUZZ_LDLIBS) -o $@

# Runs every fuzz target for FUZZ_SECONDS from a copy of its seed corpus;
# skipped (with the reason) when clang or its libFuzzer runtime is missing.
fuzz-check:
	MAKE="$(MAKE)" BUILD=$(BUILD) FUZZ_CC=$(FUZZ_CC) FUZZ_SECONDS=$(FUZZ_SECONDS) sh fuzz/check.sh

clean:
	rm -rf build build-asan build-aarch64

-include $(LIB_OBJ:.o=.d) $(TOOL_OBJ:.o=.d) $(TEST_BIN:=.d) $(FUZZ_OBJ:.o=.d)
