/* A 128-bit digest of a block of bytes, fast enough to tell at every inference call whether the weights a
 * kept pack was made from changed (rnnfast.nn._packs): it reads the weights once, where packing them reads
 * and writes them (and an exact comparison with a copy reads them twice).
 *
 * Not cryptographic, and not exact: two different weight arrays get one digest only by accident, at odds
 * of about 2^-128 for a hash of this kind (a kept pack would then serve weights it was not made from); it is
 * not built to resist arrays crafted to collide. Structure (xxHash's XXH3, written
 * anew): the bytes go in 64-byte stripes into eight 64-bit lanes; a stripe's lane word d, keyed
 * (k = d ^ key[stripe % 8][lane]), adds lo32(k) * hi32(k) to its lane and d itself to the neighbouring lane
 * (so no input is lost when the product is 0); every 8 stripes the lanes are scrambled (xor-shift, key,
 * multiply by a 32-bit prime), so where a word lies matters, not only what it is. The last stripe is zero
 * padded; the length goes into the end. The bytes are cut into RF_HASH_CHUNK chunks hashed apart (seeded by
 * their index: threads take chunks), whose digests are then hashed in order: the digest depends on the
 * bytes alone, not the thread count nor the instruction set. */
#ifndef RF_HASH_H
#define RF_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "rf_gemm.h" /* (RF_SELECT) */
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

#define RF_HASH_CHUNK ((size_t)256 * 1024)

/* 64 key words: a fixed splitmix64 sequence (rf_hash_setup) */
static uint64_t rf_hash_key[64];
static const uint64_t RF_HP32 = 0x9E3779B1ULL, RF_HP64A = 0x9E3779B97F4A7C15ULL, RF_HP64B = 0xC2B2AE3D27D4EB4FULL;

static uint64_t rf_splitmix(uint64_t* s) {
    uint64_t z = (*s += RF_HP64A);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* acc (8 lanes) over nst whole stripes at p. MUL32(x, y): lo32(x) * lo32(y) in each 64-bit lane (x86's
 * pmuludq: GCC made a full 64-bit product of the plain expression, three multiplies where one does). */
#define RF_HASH_STRIPES_BODY(V, LOAD, STORE, XOR, ADD, SHR, SHL, MUL32, SWAP, SET1)                     \
    V a[8 / (sizeof(V) / 8)], keys[8][8 / (sizeof(V) / 8)], ks[8 / (sizeof(V) / 8)];                    \
    enum { NV = 8 / (sizeof(V) / 8), W = sizeof(V) / 8 };                                              \
    for (int h = 0; h < NV; h++) {                                                                     \
        a[h] = LOAD(acc + W * h);                                                                      \
        for (int j = 0; j < 8; j++) keys[j][h] = LOAD(rf_hash_key + 8 * j + W * h);                    \
        ks[h] = LOAD(rf_hash_ks + W * h);                                                              \
    }                                                                                                  \
    const V p32 = SET1(RF_HP32);                                                                       \
    size_t s = 0;                                                                                      \
    for (; s + 8 <= nst; s += 8) { /* a block: eight stripes' sums (integer adds: any order), scrambled */ \
        for (int h = 0; h < NV; h++) {                                                                 \
            V v[8];                                                                                    \
            _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {                                      \
                V d = LOAD((const uint64_t*)(p + 64 * (s + j)) + W * h), k = XOR(d, keys[j][h]);       \
                v[j] = ADD(MUL32(k, SHR(k, 32)), SWAP(d));                                             \
            }                                                                                          \
            V t = ADD(ADD(ADD(v[0], v[1]), ADD(v[2], v[3])), ADD(ADD(v[4], v[5]), ADD(v[6], v[7])));   \
            V x = ADD(a[h], t);                                                                        \
            x = XOR(XOR(x, SHR(x, 47)), ks[h]);                                                        \
            a[h] = ADD(MUL32(x, p32), SHL(MUL32(SHR(x, 32), p32), 32));                                \
        }                                                                                              \
    }                                                                                                  \
    for (; s < nst; s++) /* the stripes after the last whole block, unscrambled */                     \
        for (int h = 0; h < NV; h++) {                                                                 \
            V d = LOAD((const uint64_t*)(p + 64 * s) + W * h), k = XOR(d, keys[s & 7][h]);             \
            a[h] = ADD(a[h], ADD(MUL32(k, SHR(k, 32)), SWAP(d)));                                      \
        }                                                                                              \
    for (int h = 0; h < NV; h++) STORE(acc + W * h, a[h]);

#define RF_HASH_STRIPES_ARGS uint64_t* acc, const unsigned char* p, size_t nst
typedef void (*rf_hash_stripes_fn)(uint64_t*, const unsigned char*, size_t);
static uint64_t rf_hash_ks[8];

/* The same sums lane by lane (machines other than x86-64; the tests' reference). */
static void rf_hash_stripes_scalar(RF_HASH_STRIPES_ARGS) {
    const uint64_t lo = 0xFFFFFFFFULL;
    for (size_t s = 0; s < nst; s++) {
        uint64_t d[8];
        memcpy(d, p + 64 * s, 64);
        for (int i = 0; i < 8; i++) {
            uint64_t k = d[i] ^ rf_hash_key[8 * (s & 7) + i];
            acc[i] += (k & lo) * (k >> 32) + d[i ^ 1];
        }
        if ((s & 7) == 7 && s + 1 <= nst - nst % 8)
            for (int i = 0; i < 8; i++) {
                uint64_t x = acc[i];
                x = x ^ (x >> 47) ^ rf_hash_ks[i];
                acc[i] = (x & lo) * RF_HP32 + (((x >> 32) * RF_HP32) << 32);
            }
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx512f"))) static void rf_hash_stripes_avx512(RF_HASH_STRIPES_ARGS) {
#define L512(q) _mm512_loadu_si512((const void*)(q))
#define S512(q, v) _mm512_storeu_si512((void*)(q), v)
#define SW512(d) _mm512_shuffle_epi32(d, (_MM_PERM_ENUM)0x4E)
    RF_HASH_STRIPES_BODY(__m512i, L512, S512, _mm512_xor_si512, _mm512_add_epi64, _mm512_srli_epi64,
                         _mm512_slli_epi64, _mm512_mul_epu32, SW512, _mm512_set1_epi64)
#undef L512
#undef S512
#undef SW512
}

__attribute__((target("avx2"))) static void rf_hash_stripes_avx2(RF_HASH_STRIPES_ARGS) {
#define L256(q) _mm256_loadu_si256((const __m256i*)(q))
#define S256(q, v) _mm256_storeu_si256((__m256i*)(q), v)
#define SW256(d) _mm256_shuffle_epi32(d, 0x4E)
#define SET256(x) _mm256_set1_epi64x((long long)(x))
    RF_HASH_STRIPES_BODY(__m256i, L256, S256, _mm256_xor_si256, _mm256_add_epi64, _mm256_srli_epi64,
                         _mm256_slli_epi64, _mm256_mul_epu32, SW256, SET256)
#undef L256
#undef S256
#undef SW256
#undef SET256
}

/* (SSE2: every x86-64) */
static void rf_hash_stripes_base(RF_HASH_STRIPES_ARGS) {
#define L128(q) _mm_loadu_si128((const __m128i*)(q))
#define S128(q, v) _mm_storeu_si128((__m128i*)(q), v)
#define SW128(d) _mm_shuffle_epi32(d, 0x4E)
#define SET128(x) _mm_set1_epi64x((long long)(x))
    RF_HASH_STRIPES_BODY(__m128i, L128, S128, _mm_xor_si128, _mm_add_epi64, _mm_srli_epi64, _mm_slli_epi64,
                         _mm_mul_epu32, SW128, SET128)
#undef L128
#undef S128
#undef SW128
#undef SET128
}
RF_SELECT(rf_hash_stripes, rf_hash_stripes_fn)
#endif
static rf_hash_stripes_fn rf_hash_stripes;

/* The key and the instruction set's copy, chosen once, when the extension loads. */
__attribute__((constructor)) static void rf_hash_setup(void) {
    uint64_t s = 0x5DEECE66DULL;
    for (int i = 0; i < 64; i++) rf_hash_key[i] = rf_splitmix(&s);
    for (int i = 0; i < 8; i++) rf_hash_ks[i] = rf_splitmix(&s);
#if defined(__GNUC__) && defined(__x86_64__)
    rf_hash_stripes = rf_hash_stripes_select();
#else
    rf_hash_stripes = rf_hash_stripes_scalar;
#endif
}

/* Tests: hash with copy isa (0 lane by lane, 1 SSE2, 2 AVX2, 3 AVX-512) if the processor has it; returns
 * whether it does. */
static int rf_hash_use(int isa) {
    if (isa == 0) {
        rf_hash_stripes = rf_hash_stripes_scalar;
        return 1;
    }
#if defined(__GNUC__) && defined(__x86_64__)
    __builtin_cpu_init();
    if (isa == 1) rf_hash_stripes = rf_hash_stripes_base;
    else if (isa == 2 && __builtin_cpu_supports("avx2")) rf_hash_stripes = rf_hash_stripes_avx2;
    else if (isa == 3 && __builtin_cpu_supports("avx512f")) rf_hash_stripes = rf_hash_stripes_avx512;
    else return 0;
    return 1;
#else
    return 0;
#endif
}

static inline uint64_t rf_mul_fold(uint64_t a, uint64_t b) {
    unsigned __int128 m = (unsigned __int128)a * b;
    return (uint64_t)m ^ (uint64_t)(m >> 64);
}

static inline uint64_t rf_avalanche(uint64_t h) {
    h ^= h >> 37;
    h *= 0x165667919E3779F9ULL;
    return h ^ (h >> 32);
}

/* out[2] := the digest of n bytes at p hashed as one chunk (seed: the chunk's index) */
static void rf_hash_chunk(const unsigned char* p, size_t n, uint64_t seed, uint64_t* out) {
    uint64_t acc[8];
    for (int i = 0; i < 8; i++) acc[i] = rf_hash_key[(i + 8) & 63] ^ (seed * RF_HP64B + (uint64_t)i);
    size_t nst = n / 64;
    rf_hash_stripes(acc, p, nst);
    unsigned char last[64] = {0};
    memcpy(last, p + 64 * nst, n - 64 * nst);
    rf_hash_stripes(acc, last, 1);
    uint64_t h1 = n * RF_HP64A, h2 = ~n * RF_HP64B;
    for (int i = 0; i < 8; i += 2) {
        h1 += rf_mul_fold(acc[i] ^ rf_hash_key[16 + i], acc[i + 1] ^ rf_hash_key[17 + i]);
        h2 += rf_mul_fold(acc[i] ^ rf_hash_key[32 + i], acc[i + 1] ^ rf_hash_key[33 + i]);
    }
    out[0] = rf_avalanche(h1);
    out[1] = rf_avalanche(h2 ^ h1);
}

/* Chunks of the n bytes at p a thread count splits (chunk c: [c RF_HASH_CHUNK, ...)). */
static inline size_t rf_hash_nchunks(size_t n) { return n == 0 ? 1 : (n + RF_HASH_CHUNK - 1) / RF_HASH_CHUNK; }

/* digests[2 c .. 2 c + 1] := chunk c's, for chunks [c0, c1) */
static void rf_hash_chunks(const unsigned char* p, size_t n, size_t c0, size_t c1, uint64_t* digests) {
    for (size_t c = c0; c < c1; c++) {
        size_t lo = c * RF_HASH_CHUNK, m = n - lo < RF_HASH_CHUNK ? n - lo : RF_HASH_CHUNK;
        rf_hash_chunk(p + lo, m, c, digests + 2 * c);
    }
}

/* out[2] := the digest of the nc chunk digests (the bytes' digest) */
static void rf_hash_combine(const uint64_t* digests, size_t nc, uint64_t* out) {
    if (nc == 1) {
        out[0] = digests[0];
        out[1] = digests[1];
        return;
    }
    rf_hash_chunk((const unsigned char*)digests, 16 * nc, ~(uint64_t)0, out);
}

#endif
