# tern build.
#   make            build/tern and build/toml-decode (optimised, warnings are errors)
#   make test       everything under ASan+UBSan in build/san/, then the unit tests,
#                   the golden tests and the official TOML suite
#   make fuzz       libFuzzer harnesses in build/fuzz/ (clang)
#   make clean

CC      ?= cc
CSTD     = -std=c11 -D_GNU_SOURCE
WARN     = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS  ?= -O2 -g
CPPFLAGS += -Isrc
LDLIBS  += -lcurl -lunbound -levent_openssl -levent -levent_pthreads -lpthread -ljansson -lssl -lcrypto

LIB_SRC  = $(wildcard src/*/*.c)
TERN_SRC = src/main.c
TOOL_SRC = tools/toml_decode.c
UNIT_SRC = $(wildcard tests/unit/test_*.c)
FUZZ_SRC = $(wildcard tests/fuzz/fuzz_*.c)

# One rule set, two variants: build/ (release) and build/san/ (sanitizers).
define variant
$(1)/obj/%.o: %.c $$(wildcard src/*/*.h) | $(1)/obj
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CSTD) $$(WARN) $(2) $$(CPPFLAGS) -c $$< -o $$@

$(1)/libtern.a: $$(LIB_SRC:%.c=$(1)/obj/%.o)
	rm -f $$@ && ar rcs $$@ $$^

$(1)/tern: $(1)/obj/src/main.o $(1)/libtern.a
	$$(CC) $(2) -o $$@ $$^ $$(LDLIBS)

$(1)/toml-decode: $(1)/obj/tools/toml_decode.o $(1)/libtern.a
	$$(CC) $(2) -o $$@ $$^ $$(LDLIBS)

$(1)/obj:
	@mkdir -p $$@
endef

SAN_FLAGS = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

$(eval $(call variant,build,$(CFLAGS)))
$(eval $(call variant,build/san,$(SAN_FLAGS)))

.PHONY: all test unit fuzz clean
all: build/tern build/toml-decode

UNIT_BINS = $(UNIT_SRC:tests/unit/%.c=build/san/unit/%)
build/san/unit/%: tests/unit/%.c build/san/libtern.a
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) -Wno-missing-prototypes $(SAN_FLAGS) $(CPPFLAGS) -o $@ $< build/san/libtern.a -lcmocka $(LDLIBS)

unit: $(UNIT_BINS) build/san/tern build/san/toml-decode

# The whole suite; scripts/test.sh wraps this with dependency installation.
test: unit
	@/usr/bin/python3 tests/run_all.py

# The library is compiled once for every harness (fuzzer-no-link: coverage
# without libFuzzer's main), each harness then links against it.
FUZZ_BINS = $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
FUZZ_SAN = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer
build/fuzz/obj/%.o: %.c $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	clang $(CSTD) $(WARN) -fsanitize=fuzzer-no-link $(FUZZ_SAN) $(CPPFLAGS) -c $< -o $@
build/fuzz/libtern.a: $(LIB_SRC:%.c=build/fuzz/obj/%.o)
	rm -f $@ && ar rcs $@ $^
build/fuzz/%: tests/fuzz/%.c build/fuzz/libtern.a
	clang $(CSTD) $(WARN) -Wno-missing-prototypes -fsanitize=fuzzer $(FUZZ_SAN) $(CPPFLAGS) -o $@ $< build/fuzz/libtern.a $(LDLIBS)
fuzz: $(FUZZ_BINS)

clean:
	rm -rf build
