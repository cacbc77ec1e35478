# rotkv build. `make` builds the library and the CLI; `make test` builds and runs
# the whole test suite; `make test-asan` runs it under AddressSanitizer+UBSan;
# `make fuzz` builds the libFuzzer target for the GGUF parser (clang).
CC      ?= cc
BUILD   ?= build
OPT     ?= -O2 -g
CFLAGS  += -std=c11 -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L $(OPT) -Wall -Wextra -Wshadow \
           -Wno-unused-parameter -pthread -Iinclude -Isrc $(shell pkg-config --cflags libpcre2-8 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs libpcre2-8 2>/dev/null || echo -lpcre2-8) -lm -pthread
# rotkv serve: libmicrohttpd (HTTP) and cJSON (JSON)
CFLAGS  += $(shell pkg-config --cflags libmicrohttpd libcjson 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs libmicrohttpd libcjson 2>/dev/null || echo -lmicrohttpd -lcjson)
TEST_LDLIBS = $(shell pkg-config --libs cmocka 2>/dev/null || echo -lcmocka)
# rotkv pull / -hf: libcurl (HTTP) and libcrypto (SHA-256), for the rotkv binary only
TOOL_CFLAGS = $(shell pkg-config --cflags libcurl libcrypto 2>/dev/null)
TOOL_LDLIBS = $(shell pkg-config --libs libcurl libcrypto 2>/dev/null || echo -lcurl -lcrypto)

LIB_SRC   := $(sort $(wildcard src/*.c src/arch/*/*.c))
TOOL_SRC  := $(sort $(wildcard tools/*.c))
TEST_SRC  := $(sort $(wildcard tests/test_*.c))
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o)
TOOL_OBJ  := $(TOOL_SRC:%.c=$(BUILD)/%.o)
TEST_BIN  := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all check test test-asan fuzz clean
all: $(BUILD)/rotkv

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

test: $(TEST_BIN) $(BUILD)/rotkv
	ROTKV_BIN=$(BUILD)/rotkv sh tests/run.sh $(TEST_BIN)

# The whole suite: optimized build, then again under ASan+UBSan.
check:
	$(MAKE) test
	$(MAKE) test-asan

test-asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" test

fuzz: $(BUILD)/fuzz_gguf
$(BUILD)/fuzz_gguf: fuzz/fuzz_gguf.c src/gguf.c src/quant.c src/cpu.c $(wildcard src/arch/x86/quant_*.c)
	@mkdir -p $(dir $@)
	clang -std=c11 -D_DEFAULT_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Isrc $^ -lm -pthread -o $@

clean:
	rm -rf build build-asan

-include $(LIB_OBJ:.o=.d) $(TOOL_OBJ:.o=.d) $(TEST_BIN:=.d)
