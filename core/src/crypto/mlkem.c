/* mlkem.c — ML-KEM-768 written from FIPS 203 (Algorithms 7-18), for builds
 * against an OpenSSL without its own ML-KEM (mlkem_openssl.c otherwise).
 *
 * Constant time: no branch and no memory index depends on a secret.
 * Reductions are Montgomery/Barrett multiply-and-shift, Compress divides by
 * q with a multiply-shift (a `/` may compile to a variable-time divide),
 * and decapsulation picks K' or the rejection secret with a mask. The one
 * loop whose length varies, SampleNTT, runs on the public seed rho.
 *
 * Polynomials are int16 coefficients; in the NTT domain products carry a
 * Montgomery factor R^-1 (R = 2^16) that tomont or the inverse NTT's last
 * multiplication cancels. Hashes and XOFs are OpenSSL's SHA-3 (EVP).
 * OpenSSL 3.0 cannot squeeze a SHAKE twice, so SampleNTT squeezes three
 * SHAKE128 blocks (336 candidates; 256 are needed and 273 arrive on
 * average, too few about once in 120 polynomials) and, should they run
 * out, squeezes a longer output again and carries on. Four blocks would
 * never run out in practice but cost a third more hashing. */
#include <stdint.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "crypto/crypto_internal.h"
#include "hushcall/mlkem.h"
#include "hushcall/secmem.h"

#define N 256
#define K 3
#define Q 3329
#define DU 10
#define DV 4
#define POLY_BYTES 384 /* ByteEncode12 of one polynomial */
#define POLYVEC_BYTES (K * POLY_BYTES)
#define SYM_BYTES 32
#define CBD_BYTES 128 /* 64 * eta, eta1 = eta2 = 2 */
#define C1_BYTES (K * N * DU / 8)
#define XOF_BLOCK_BYTES 168 /* SHAKE128's rate */
#define XOF_FIRST_BYTES (3 * XOF_BLOCK_BYTES)

/* dk = dk_pke || ek || H(ek) || z (FIPS 203 Algorithm 16). */
#define DK_EK_OFFSET POLYVEC_BYTES
#define DK_HASH_OFFSET (DK_EK_OFFSET + HUSH_MLKEM768_ENCAPS_KEY_BYTES)
#define DK_Z_OFFSET (DK_HASH_OFFSET + SYM_BYTES)

#define QINV 62209u       /* q^-1 mod 2^16 */
#define MONT_R2 1353      /* R^2 mod q: fqmul by it multiplies by R */
#define INVNTT_SCALE 1441 /* R^2 / 128 mod q: undoes basemul's R^-1 and NTT's 128 */
#define BARRETT_V 20159   /* round(2^26 / q) */
#define DIV_Q_MUL 2580335u /* floor(t / q) == (t * DIV_Q_MUL) >> 33 for t < 2^23 */
#define DIV_Q_SHIFT 33

typedef struct {
    int16_t c[N];
} poly;

typedef struct {
    poly p[K];
} polyvec;

/* zeta^BitRev7(i) * R mod q, centred, zeta = 17 (NTT, Algorithms 9 and 10). */
static const int16_t zetas[128] = {
    -1044, -758,  -359,  -1517, 1493,  1422,  287,   202,   -171,  622,   1577,  182,   962,
    -1202, -1474, 1468,  573,   -1325, 264,   383,   -829,  1458,  -1602, -130,  -681,  1017,
    732,   608,   -1542, 411,   -205,  -1571, 1223,  652,   -552,  1015,  -1293, 1491,  -282,
    -1544, 516,   -8,    -320,  -666,  -1618, -1162, 126,   1469,  -853,  -90,   -271,  830,
    107,   -1421, -247,  -951,  -398,  961,   -1508, -725,  448,   -1065, 677,   -1275, -1103,
    430,   555,   843,   -1251, 871,   1550,  105,   422,   587,   177,   -235,  -291,  -460,
    1574,  1653,  -246,  778,   1159,  -147,  -777,  1483,  -602,  1119,  -1590, 644,   -872,
    349,   418,   329,   -156,  -75,   817,   1097,  603,   610,   1322,  -1285, -1465, 384,
    -1215, -136,  1218,  -1335, -874,  220,   -1187, -1659, -1185, -1530, -1278, 794,   -1510,
    -854,  -870,  478,   -108,  -308,  996,   991,   958,   -1460, 1522,  1628,
};

/* zeta^(2 BitRev7(i) + 1) * R mod q, centred (BaseCaseMultiply's gamma). */
static const int16_t gammas[128] = {
    -1103, 1103,  430,   -430,  555,   -555,  843,   -843,  -1251, 1251,  871,   -871,  1550,
    -1550, 105,   -105,  422,   -422,  587,   -587,  177,   -177,  -235,  235,   -291,  291,
    -460,  460,   1574,  -1574, 1653,  -1653, -246,  246,   778,   -778,  1159,  -1159, -147,
    147,   -777,  777,   1483,  -1483, -602,  602,   1119,  -1119, -1590, 1590,  644,   -644,
    -872,  872,   349,   -349,  418,   -418,  329,   -329,  -156,  156,   -75,   75,    817,
    -817,  1097,  -1097, 603,   -603,  610,   -610,  1322,  -1322, -1285, 1285,  -1465, 1465,
    384,   -384,  -1215, 1215,  -136,  136,   1218,  -1218, -1335, 1335,  -874,  874,   220,
    -220,  -1187, 1187,  -1659, 1659,  -1185, 1185,  -1530, 1530,  -1278, 1278,  794,   -794,
    -1510, 1510,  -854,  854,   -870,  870,   478,   -478,  -108,  108,   -308,  308,   996,
    -996,  991,   -991,  958,   -958,  -1460, 1460,  1522,  -1522, 1628,  -1628,
};

/* ---- arithmetic mod q --------------------------------------------------- */

/* a * R^-1 mod q, in (-q, q), for |a| < q * 2^15. */
static inline int16_t montgomery_reduce(int32_t a)
{
    int16_t t = (int16_t)(uint16_t)((uint32_t)a * QINV);
    return (int16_t)((a - (int32_t)t * Q) >> 16);
}

static inline int16_t fqmul(int16_t a, int16_t b) { return montgomery_reduce((int32_t)a * b); }

/* The representative of a mod q in [-(q-1)/2, (q-1)/2]. */
static inline int16_t barrett_reduce(int16_t a)
{
    int16_t t = (int16_t)(((int32_t)BARRETT_V * a + (1 << 25)) >> 26);
    return (int16_t)(a - t * Q);
}

/* a in (-q, q) to [0, q): adds q when the sign bit is set, without a branch. */
static inline uint16_t to_unsigned(int16_t a)
{
    return (uint16_t)(a + ((a >> 15) & Q));
}

/* Compress_d (FIPS 203 (4.7)) of x in [0, q): round(2^d x / q) mod 2^d. */
static inline uint32_t compress(uint32_t x, unsigned d)
{
    uint64_t t = ((uint64_t)x << d) + (Q - 1) / 2;
    return (uint32_t)((t * DIV_Q_MUL) >> DIV_Q_SHIFT) & ((1u << d) - 1);
}

/* Decompress_d (FIPS 203 (4.8)): round(q y / 2^d). */
static inline int16_t decompress(uint32_t y, unsigned d)
{
    return (int16_t)((y * Q + (1u << (d - 1))) >> d);
}

/* ---- polynomials -------------------------------------------------------- */

static void poly_reduce(poly *r)
{
    for (size_t i = 0; i < N; i++)
        r->c[i] = barrett_reduce(r->c[i]);
}

static void poly_add(poly *r, const poly *a)
{
    for (size_t i = 0; i < N; i++)
        r->c[i] = (int16_t)(r->c[i] + a->c[i]);
}

static void poly_sub(poly *r, const poly *a)
{
    for (size_t i = 0; i < N; i++)
        r->c[i] = (int16_t)(r->c[i] - a->c[i]);
}

/* Multiply by R: cancels the R^-1 a product in the NTT domain carries. */
static void poly_tomont(poly *r)
{
    for (size_t i = 0; i < N; i++)
        r->c[i] = fqmul(r->c[i], MONT_R2);
}

/* Algorithm 9. Input |c| < q; output reduced. */
static void poly_ntt(poly *r)
{
    size_t k = 1;
    for (size_t len = 128; len >= 2; len >>= 1) {
        for (size_t start = 0; start < N; start += 2 * len) {
            int16_t zeta = zetas[k++];
            for (size_t j = start; j < start + len; j++) {
                int16_t t = fqmul(zeta, r->c[j + len]);
                r->c[j + len] = (int16_t)(r->c[j] - t);
                r->c[j] = (int16_t)(r->c[j] + t);
            }
        }
    }
    poly_reduce(r);
}

/* Algorithm 10, also multiplying by R so that the R^-1 of the products
 * before it cancels. Input |c| < q. */
static void poly_invntt_tomont(poly *r)
{
    size_t k = 127;
    for (size_t len = 2; len <= 128; len <<= 1) {
        for (size_t start = 0; start < N; start += 2 * len) {
            int16_t zeta = zetas[k--];
            for (size_t j = start; j < start + len; j++) {
                int16_t t = r->c[j];
                r->c[j] = barrett_reduce((int16_t)(t + r->c[j + len]));
                r->c[j + len] = fqmul(zeta, (int16_t)(r->c[j + len] - t));
            }
        }
    }
    for (size_t i = 0; i < N; i++)
        r->c[i] = fqmul(r->c[i], INVNTT_SCALE);
}

/* r = sum_j a[j] * b[j] in the NTT domain (Algorithms 11 and 12), times
 * R^-1, reduced. Sums in 32 bits and reduces once: with |a| < 2^12 and
 * |b| <= q/2 the six products per coefficient stay far below q 2^15. */
static void polyvec_inner_product(poly *r, const polyvec *a, const polyvec *b)
{
    for (size_t i = 0; i < N / 2; i++) {
        int32_t c0 = 0, c1 = 0;
        for (size_t j = 0; j < K; j++) {
            int32_t a0 = a->p[j].c[2 * i], a1 = a->p[j].c[2 * i + 1];
            int32_t b0 = b->p[j].c[2 * i], b1 = b->p[j].c[2 * i + 1];
            c0 += a0 * b0 + (int32_t)fqmul((int16_t)a1, (int16_t)b1) * gammas[i];
            c1 += a0 * b1 + a1 * b0;
        }
        r->c[2 * i] = barrett_reduce(montgomery_reduce(c0));
        r->c[2 * i + 1] = barrett_reduce(montgomery_reduce(c1));
    }
}

/* ---- byte encodings (Algorithms 5 and 6) -------------------------------- */

static void poly_encode12(unsigned char out[POLY_BYTES], const poly *a)
{
    for (size_t i = 0; i < N / 2; i++) {
        uint16_t t0 = to_unsigned(barrett_reduce(a->c[2 * i]));
        uint16_t t1 = to_unsigned(barrett_reduce(a->c[2 * i + 1]));
        out[3 * i] = (unsigned char)t0;
        out[3 * i + 1] = (unsigned char)((t0 >> 8) | (t1 << 4));
        out[3 * i + 2] = (unsigned char)(t1 >> 4);
    }
}

/* ByteDecode12 without the final mod q: values up to 4095, which the
 * arithmetic treats mod q anyway. The §7.2 check looks for them. */
static void poly_decode12(poly *r, const unsigned char in[POLY_BYTES])
{
    for (size_t i = 0; i < N / 2; i++) {
        uint16_t b0 = in[3 * i], b1 = in[3 * i + 1], b2 = in[3 * i + 2];
        r->c[2 * i] = (int16_t)((b0 | (b1 << 8)) & 0xfff);
        r->c[2 * i + 1] = (int16_t)((b1 >> 4) | (b2 << 4));
    }
}

static void polyvec_encode12(unsigned char out[POLYVEC_BYTES], const polyvec *a)
{
    for (size_t j = 0; j < K; j++)
        poly_encode12(out + j * POLY_BYTES, &a->p[j]);
}

static void polyvec_decode12(polyvec *r, const unsigned char in[POLYVEC_BYTES])
{
    for (size_t j = 0; j < K; j++)
        poly_decode12(&r->p[j], in + j * POLY_BYTES);
}

/* ByteEncode_du(Compress_du(u)), four 10-bit values in five bytes. */
static void polyvec_compress_du(unsigned char out[C1_BYTES], const polyvec *u)
{
    for (size_t j = 0; j < K; j++) {
        for (size_t i = 0; i < N / 4; i++) {
            uint32_t t[4];
            for (size_t k = 0; k < 4; k++)
                t[k] = compress(to_unsigned(barrett_reduce(u->p[j].c[4 * i + k])), DU);
            unsigned char *o = out + j * (N * DU / 8) + 5 * i;
            o[0] = (unsigned char)t[0];
            o[1] = (unsigned char)((t[0] >> 8) | (t[1] << 2));
            o[2] = (unsigned char)((t[1] >> 6) | (t[2] << 4));
            o[3] = (unsigned char)((t[2] >> 4) | (t[3] << 6));
            o[4] = (unsigned char)(t[3] >> 2);
        }
    }
}

static void polyvec_decompress_du(polyvec *u, const unsigned char in[C1_BYTES])
{
    for (size_t j = 0; j < K; j++) {
        for (size_t i = 0; i < N / 4; i++) {
            const unsigned char *b = in + j * (N * DU / 8) + 5 * i;
            uint32_t t[4] = {
                (b[0] | ((uint32_t)b[1] << 8)) & 0x3ff,
                ((b[1] >> 2) | ((uint32_t)b[2] << 6)) & 0x3ff,
                ((b[2] >> 4) | ((uint32_t)b[3] << 4)) & 0x3ff,
                ((b[3] >> 6) | ((uint32_t)b[4] << 2)) & 0x3ff,
            };
            for (size_t k = 0; k < 4; k++)
                u->p[j].c[4 * i + k] = decompress(t[k], DU);
        }
    }
}

/* ByteEncode_dv(Compress_dv(v)), two 4-bit values a byte. */
static void poly_compress_dv(unsigned char out[N * DV / 8], const poly *v)
{
    for (size_t i = 0; i < N / 2; i++) {
        uint32_t t0 = compress(to_unsigned(barrett_reduce(v->c[2 * i])), DV);
        uint32_t t1 = compress(to_unsigned(barrett_reduce(v->c[2 * i + 1])), DV);
        out[i] = (unsigned char)(t0 | (t1 << 4));
    }
}

static void poly_decompress_dv(poly *v, const unsigned char in[N * DV / 8])
{
    for (size_t i = 0; i < N / 2; i++) {
        v->c[2 * i] = decompress(in[i] & 15u, DV);
        v->c[2 * i + 1] = decompress(in[i] >> 4, DV);
    }
}

/* Decompress_1(ByteDecode_1(m)): each bit to 0 or (q+1)/2, by a mask. */
static void poly_from_message(poly *r, const unsigned char m[SYM_BYTES])
{
    for (size_t i = 0; i < N; i++) {
        int16_t bit = (int16_t)((m[i / 8] >> (i % 8)) & 1);
        r->c[i] = (int16_t)(-bit & ((Q + 1) / 2));
    }
}

/* ByteEncode_1(Compress_1(w)). */
static void poly_to_message(unsigned char m[SYM_BYTES], const poly *w)
{
    memset(m, 0, SYM_BYTES);
    for (size_t i = 0; i < N; i++)
        m[i / 8] |= (unsigned char)(compress(to_unsigned(barrett_reduce(w->c[i])), 1) << (i % 8));
}

/* SamplePolyCBD_2 (Algorithm 8) from 128 PRF bytes. */
static void poly_cbd2(poly *r, const unsigned char buf[CBD_BYTES])
{
    for (size_t i = 0; i < N / 8; i++) {
        uint32_t t = (uint32_t)buf[4 * i] | ((uint32_t)buf[4 * i + 1] << 8) |
                     ((uint32_t)buf[4 * i + 2] << 16) | ((uint32_t)buf[4 * i + 3] << 24);
        uint32_t d = (t & 0x55555555u) + ((t >> 1) & 0x55555555u);
        for (size_t j = 0; j < 8; j++) {
            int16_t x = (int16_t)((d >> (4 * j)) & 3);
            int16_t y = (int16_t)((d >> (4 * j + 2)) & 3);
            r->c[8 * i + j] = (int16_t)(x - y);
        }
    }
}

/* ---- hashes (FIPS 203 §4.1) through OpenSSL's SHA-3 --------------------- */

/* out = md(a || b), `out_len` bytes (any length for a SHAKE). */
HUSH_MUST_USE
static hush_status hash2(EVP_MD_CTX *ctx, const EVP_MD *md, const unsigned char *a, size_t a_len,
                         const unsigned char *b, size_t b_len, unsigned char *out, size_t out_len,
                         hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_OSSL(EVP_DigestInit_ex(ctx, md, NULL) == 1, "SHA-3 init");
    HUSH_OSSL(EVP_DigestUpdate(ctx, a, a_len) == 1, "SHA-3 update");
    if (b_len > 0)
        HUSH_OSSL(EVP_DigestUpdate(ctx, b, b_len) == 1, "SHA-3 update");
    if ((EVP_MD_get_flags(md) & EVP_MD_FLAG_XOF) != 0)
        HUSH_OSSL(EVP_DigestFinalXOF(ctx, out, out_len) == 1, "SHAKE squeeze");
    else
        HUSH_OSSL(EVP_DigestFinal_ex(ctx, out, NULL) == 1, "SHA-3 final");
cleanup:
    return status;
}

/* PRF_2(s, b) = SHAKE256(s || b, 128), sampled into r with CBD_2. */
HUSH_MUST_USE
static hush_status sample_cbd(EVP_MD_CTX *ctx, const unsigned char seed[SYM_BYTES],
                              unsigned char nonce, poly *r, hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char buf[CBD_BYTES];
    HUSH_TRY(hash2(ctx, hush__shake256(), seed, SYM_BYTES, &nonce, 1, buf, sizeof buf, err));
    poly_cbd2(r, buf);
cleanup:
    hush_memzero(buf, sizeof buf);
    return status;
}

/* A vector of CBD samples with nonces *nonce, *nonce + 1, ... */
HUSH_MUST_USE
static hush_status sample_cbd_vec(EVP_MD_CTX *ctx, const unsigned char seed[SYM_BYTES],
                                  unsigned char *nonce, polyvec *r, hush_error *err)
{
    hush_status status = HUSH_OK;
    for (size_t j = 0; j < K; j++)
        HUSH_TRY(sample_cbd(ctx, seed, (*nonce)++, &r->p[j], err));
cleanup:
    return status;
}

/* Rejection sampling of SampleNTT over `bytes` of XOF output, from the
 * coefficient `*filled` on; returns how far it got. Public data only. */
static size_t parse_uniform(int16_t r[N], size_t filled, const unsigned char *bytes, size_t len,
                            size_t *pos)
{
    while (filled < N && *pos + 3 <= len) {
        const unsigned char *b = bytes + *pos;
        uint16_t d1 = (uint16_t)(b[0] | ((b[1] & 15u) << 8));
        uint16_t d2 = (uint16_t)((b[1] >> 4) | (b[2] << 4));
        *pos += 3;
        if (d1 < Q)
            r[filled++] = (int16_t)d1;
        if (d2 < Q && filled < N)
            r[filled++] = (int16_t)d2;
    }
    return filled;
}

/* SampleNTT (Algorithm 7) from SHAKE128(seed), first squeezing
 * `first_bytes`; when those run out, squeezing twice as much again (the
 * output's prefix is the same) and carrying on where it stopped. */
hush_status hush__mlkem768_sample_ntt(EVP_MD_CTX *ctx, const unsigned char seed[34],
                                      size_t first_bytes, int16_t out[256], hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char first[XOF_FIRST_BYTES];
    unsigned char *longer = NULL;
    size_t pos = 0, filled = 0;
    HUSH_ENSURE(first_bytes >= XOF_BLOCK_BYTES && first_bytes <= sizeof first, HUSH_E_ARGUMENT,
                "first squeeze of %zu bytes", first_bytes);
    HUSH_TRY(hash2(ctx, hush__shake128(), seed, 34, NULL, 0, first, first_bytes, err));
    filled = parse_uniform(out, filled, first, first_bytes, &pos);
    for (size_t len = 2 * first_bytes; filled < N; len *= 2) {
        OPENSSL_free(longer);
        longer = OPENSSL_malloc(len);
        HUSH_ENSURE(longer != NULL, HUSH_E_NOMEM, "SampleNTT squeeze of %zu bytes", len);
        HUSH_TRY(hash2(ctx, hush__shake128(), seed, 34, NULL, 0, longer, len, err));
        filled = parse_uniform(out, filled, longer, len, &pos);
    }
cleanup:
    OPENSSL_free(longer);
    return status;
}

/* Â (transposed when `transpose`): Â[i][j] = SampleNTT(rho || j || i). */
HUSH_MUST_USE
static hush_status generate_matrix(EVP_MD_CTX *ctx, const unsigned char rho[SYM_BYTES],
                                   bool transpose, polyvec a[K], hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char seed[SYM_BYTES + 2];
    memcpy(seed, rho, SYM_BYTES);
    for (size_t i = 0; i < K; i++) {
        for (size_t j = 0; j < K; j++) {
            seed[SYM_BYTES] = (unsigned char)(transpose ? i : j);
            seed[SYM_BYTES + 1] = (unsigned char)(transpose ? j : i);
            HUSH_TRY(hush__mlkem768_sample_ntt(ctx, seed, XOF_FIRST_BYTES, a[i].p[j].c, err));
        }
    }
cleanup:
    return status;
}

/* ---- K-PKE (Algorithms 13-15) ------------------------------------------- */

/* The working state of one operation; every field but the matrix is
 * secret or may be, so the whole is wiped on the way out. */
typedef struct {
    polyvec a[K];
    polyvec s, e, t;
    poly v, w;
    unsigned char seeds[2 * SYM_BYTES]; /* G's output */
    unsigned char m[SYM_BYTES];
    unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES];
} work;

/* K-PKE.KeyGen(d): ek and dk_pke. */
HUSH_MUST_USE
static hush_status pke_keygen(EVP_MD_CTX *ctx, work *w, const unsigned char d[SYM_BYTES],
                              unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES],
                              unsigned char dk_pke[POLYVEC_BYTES], hush_error *err)
{
    hush_status status = HUSH_OK;
    const unsigned char k = K;
    const unsigned char *rho = w->seeds, *sigma = w->seeds + SYM_BYTES;
    unsigned char nonce = 0;
    HUSH_TRY(hash2(ctx, hush__sha3_512(), d, SYM_BYTES, &k, 1, w->seeds, sizeof w->seeds, err));
    HUSH_TRY(generate_matrix(ctx, rho, false, w->a, err));
    HUSH_TRY(sample_cbd_vec(ctx, sigma, &nonce, &w->s, err));
    HUSH_TRY(sample_cbd_vec(ctx, sigma, &nonce, &w->e, err));
    for (size_t j = 0; j < K; j++) {
        poly_ntt(&w->s.p[j]);
        poly_ntt(&w->e.p[j]);
    }
    for (size_t i = 0; i < K; i++) {
        polyvec_inner_product(&w->t.p[i], &w->a[i], &w->s);
        poly_tomont(&w->t.p[i]);
        poly_add(&w->t.p[i], &w->e.p[i]);
    }
    polyvec_encode12(ek, &w->t);
    memcpy(ek + POLYVEC_BYTES, rho, SYM_BYTES);
    polyvec_encode12(dk_pke, &w->s);
cleanup:
    return status;
}

/* K-PKE.Encrypt(ek, m, r) into w->ct; ek has passed §7.2 or came out of
 * a dk (whose hash check vouches for it). Uses w->s, w->e, w->t, w->v. */
HUSH_MUST_USE
static hush_status pke_encrypt(EVP_MD_CTX *ctx, work *w,
                               const unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES],
                               const unsigned char m[SYM_BYTES], const unsigned char r[SYM_BYTES],
                               hush_error *err)
{
    hush_status status = HUSH_OK;
    polyvec *y = &w->s, *e1 = &w->e, *t = &w->t, u;
    poly e2;
    unsigned char nonce = 0;
    polyvec_decode12(t, ek);
    HUSH_TRY(generate_matrix(ctx, ek + POLYVEC_BYTES, true, w->a, err));
    HUSH_TRY(sample_cbd_vec(ctx, r, &nonce, y, err));
    HUSH_TRY(sample_cbd_vec(ctx, r, &nonce, e1, err));
    HUSH_TRY(sample_cbd(ctx, r, nonce, &e2, err));
    for (size_t j = 0; j < K; j++)
        poly_ntt(&y->p[j]);
    for (size_t i = 0; i < K; i++) {
        polyvec_inner_product(&u.p[i], &w->a[i], y);
        poly_invntt_tomont(&u.p[i]);
        poly_add(&u.p[i], &e1->p[i]);
    }
    polyvec_inner_product(&w->v, t, y);
    poly_invntt_tomont(&w->v);
    poly_add(&w->v, &e2);
    poly_from_message(&w->w, m);
    poly_add(&w->v, &w->w);
    polyvec_compress_du(w->ct, &u);
    poly_compress_dv(w->ct + C1_BYTES, &w->v);
cleanup:
    hush_memzero(&u, sizeof u);
    hush_memzero(&e2, sizeof e2);
    return status;
}

/* K-PKE.Decrypt(dk_pke, c) into w->m. Uses w->s, w->e, w->v, w->w. */
static void pke_decrypt(work *w, const unsigned char dk_pke[POLYVEC_BYTES],
                        const unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES])
{
    polyvec *s = &w->s, *u = &w->e;
    polyvec_decompress_du(u, ct);
    poly_decompress_dv(&w->v, ct + C1_BYTES);
    polyvec_decode12(s, dk_pke);
    for (size_t j = 0; j < K; j++)
        poly_ntt(&u->p[j]);
    polyvec_inner_product(&w->w, s, u);
    poly_invntt_tomont(&w->w);
    poly_sub(&w->v, &w->w);
    poly_to_message(w->m, &w->v);
}

/* ---- ML-KEM (Algorithms 16-18 and the checks of §7) --------------------- */

/* One EVP context serves every hash of an operation. */
HUSH_MUST_USE
static hush_status hash_ctx_new(EVP_MD_CTX **ctx, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush__init(err));
    *ctx = EVP_MD_CTX_new();
    HUSH_OSSL(*ctx != NULL, "EVP_MD_CTX_new");
cleanup:
    return status;
}

hush_status hush_mlkem768_keygen_from_seed(const unsigned char seed[HUSH_MLKEM768_SEED_BYTES],
                                           unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES],
                                           unsigned char dk[HUSH_MLKEM768_DECAPS_KEY_BYTES],
                                           hush_error *err)
{
    hush_status status = HUSH_OK;
    work w;
    EVP_MD_CTX *ctx = NULL;
    HUSH_ENSURE_REF(seed, "seed is NULL");
    HUSH_ENSURE_REF(ek, "ek is NULL");
    HUSH_ENSURE_REF(dk, "dk is NULL");
    HUSH_TRY(hash_ctx_new(&ctx, err));
    HUSH_TRY(pke_keygen(ctx, &w, seed, ek, dk, err));
    memcpy(dk + DK_EK_OFFSET, ek, HUSH_MLKEM768_ENCAPS_KEY_BYTES);
    HUSH_TRY(hash2(ctx, hush__sha3_256(), ek, HUSH_MLKEM768_ENCAPS_KEY_BYTES, NULL, 0,
                   dk + DK_HASH_OFFSET, SYM_BYTES, err));
    memcpy(dk + DK_Z_OFFSET, seed + SYM_BYTES, SYM_BYTES);
cleanup:
    if (status != HUSH_OK && dk != NULL)
        hush_memzero(dk, HUSH_MLKEM768_DECAPS_KEY_BYTES);
    hush_memzero(&w, sizeof w);
    EVP_MD_CTX_free(ctx);
    return status;
}

hush_status hush_mlkem768_check_encaps_key(const unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES],
                                           hush_error *err)
{
    hush_status status = HUSH_OK;
    poly p;
    unsigned out_of_range = 0;
    HUSH_ENSURE_REF(ek, "ek is NULL");
    for (size_t j = 0; j < K; j++) {
        poly_decode12(&p, ek + j * POLY_BYTES);
        for (size_t i = 0; i < N; i++)
            out_of_range |= (unsigned)(p.c[i] >= Q);
    }
    HUSH_ENSURE(out_of_range == 0, HUSH_E_KEY,
                "ML-KEM encapsulation key has a coefficient not below q (FIPS 203 7.2)");
cleanup:
    return status;
}

hush_status hush_mlkem768_encaps_derand(const unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES],
                                        const unsigned char m[HUSH_MLKEM768_MESSAGE_BYTES],
                                        unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES],
                                        unsigned char ss[HUSH_MLKEM768_SHARED_SECRET_BYTES],
                                        hush_error *err)
{
    hush_status status = HUSH_OK;
    work w;
    EVP_MD_CTX *ctx = NULL;
    unsigned char h[SYM_BYTES];
    HUSH_ENSURE_REF(m, "m is NULL");
    HUSH_ENSURE_REF(ct, "ct is NULL");
    HUSH_ENSURE_REF(ss, "ss is NULL");
    HUSH_TRY(hush_mlkem768_check_encaps_key(ek, err));
    HUSH_TRY(hash_ctx_new(&ctx, err));
    /* (K, r) = G(m || H(ek)) */
    HUSH_TRY(hash2(ctx, hush__sha3_256(), ek, HUSH_MLKEM768_ENCAPS_KEY_BYTES, NULL, 0, h,
                   sizeof h, err));
    HUSH_TRY(hash2(ctx, hush__sha3_512(), m, SYM_BYTES, h, sizeof h, w.seeds, sizeof w.seeds,
                   err));
    HUSH_TRY(pke_encrypt(ctx, &w, ek, m, w.seeds + SYM_BYTES, err));
    memcpy(ct, w.ct, sizeof w.ct);
    memcpy(ss, w.seeds, SYM_BYTES);
cleanup:
    hush_memzero(&w, sizeof w);
    EVP_MD_CTX_free(ctx);
    return status;
}

/* The §7.3 hash check: H(ek) stored in dk is the hash of the ek beside it. */
HUSH_MUST_USE
static hush_status check_decaps_key(EVP_MD_CTX *ctx,
                                    const unsigned char dk[HUSH_MLKEM768_DECAPS_KEY_BYTES],
                                    hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char h[SYM_BYTES];
    HUSH_TRY(hash2(ctx, hush__sha3_256(), dk + DK_EK_OFFSET, HUSH_MLKEM768_ENCAPS_KEY_BYTES, NULL,
                   0, h, sizeof h, err));
    HUSH_ENSURE(CRYPTO_memcmp(h, dk + DK_HASH_OFFSET, sizeof h) == 0, HUSH_E_KEY,
                "ML-KEM decapsulation key fails its hash check (FIPS 203 7.3)");
cleanup:
    return status;
}

/* out = a when `differ` is 0, b otherwise; no branch on `differ`. */
static void select_bytes(unsigned char *out, const unsigned char *a, const unsigned char *b,
                         size_t len, int differ)
{
    uint32_t d = (uint32_t)differ;
    unsigned char mask = (unsigned char)(0u - ((d | (0u - d)) >> 31));
    for (size_t i = 0; i < len; i++)
        out[i] = (unsigned char)(a[i] ^ (mask & (a[i] ^ b[i])));
}

hush_status hush_mlkem768_decaps(const unsigned char dk[HUSH_MLKEM768_DECAPS_KEY_BYTES],
                                 const unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES],
                                 unsigned char ss[HUSH_MLKEM768_SHARED_SECRET_BYTES],
                                 hush_error *err)
{
    hush_status status = HUSH_OK;
    work w;
    EVP_MD_CTX *ctx = NULL;
    unsigned char rejection[SYM_BYTES];
    HUSH_ENSURE_REF(dk, "dk is NULL");
    HUSH_ENSURE_REF(ct, "ct is NULL");
    HUSH_ENSURE_REF(ss, "ss is NULL");
    HUSH_TRY(hash_ctx_new(&ctx, err));
    HUSH_TRY(check_decaps_key(ctx, dk, err));
    pke_decrypt(&w, dk, ct);
    /* (K', r') = G(m' || h); K-bar = J(z || c) */
    HUSH_TRY(hash2(ctx, hush__sha3_512(), w.m, SYM_BYTES, dk + DK_HASH_OFFSET, SYM_BYTES,
                   w.seeds, sizeof w.seeds, err));
    HUSH_TRY(hash2(ctx, hush__shake256(), dk + DK_Z_OFFSET, SYM_BYTES, ct,
                   HUSH_MLKEM768_CIPHERTEXT_BYTES, rejection, sizeof rejection, err));
    HUSH_TRY(pke_encrypt(ctx, &w, dk + DK_EK_OFFSET, w.m, w.seeds + SYM_BYTES, err));
    select_bytes(ss, w.seeds, rejection, SYM_BYTES, CRYPTO_memcmp(ct, w.ct, sizeof w.ct));
cleanup:
    hush_memzero(rejection, sizeof rejection);
    hush_memzero(&w, sizeof w);
    EVP_MD_CTX_free(ctx);
    return status;
}

const char *hush_mlkem768_implementation(void) { return "hushcall"; }
