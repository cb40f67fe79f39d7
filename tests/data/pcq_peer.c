/*
 * pcq_peer: a second, independent implementation of upstream famfs's pcq queue, in C, for
 * tests/test_pcq.py. It declares the queue's two structures as upstream's pcq.h does (so the
 * C compiler, not famfs-py, decides where every field is), maps the device memory of the
 * queue's two files straight from the emulated device's backing file, and produces or
 * consumes with upstream's rules: bucket = payload, u64 sequence number, CRC-32 (zlib's) of
 * both stored in an unsigned long; full when producer_index + 1 == consumer_index.
 *
 *   pcq_peer layout
 *   pcq_peer create  DEVFILE POFF PSIZE COFF CSIZE NBUCKETS BSIZE
 *   pcq_peer produce DEVFILE POFF PSIZE COFF CSIZE N SEED
 *   pcq_peer consume DEVFILE POFF PSIZE COFF CSIZE N SEED
 *
 * POFF/COFF: device offsets of the producer and consumer files (one extent each), SEED 0: a
 * zero payload. Exit 0 on success, 1 on any bad message, 2 on usage errors, 3 on timeout.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

typedef uint64_t u64;
typedef uint32_t u32;

#define PCQ_MAGIC 0xBEEBEE3
#define PCQ_CONSUMER_MAGIC 0xBEEBEE4

struct pcq {
    u64 pcq_magic;
    u64 nbuckets;
    u64 bucket_size;
    u64 bucket_array_offset;
    u64 producer_index;
    char pad[1024];
    u64 next_seq;
    u64 pcq_size;
};

struct pcq_consumer {
    u32 pcq_consumer_magic;
    u32 pad;
    u64 consumer_index;
    char pad2[1048576];
    u64 next_seq;
    u64 pcqc_size;
};

static void flush(const volatile void *addr, size_t len)
{
    uintptr_t p = (uintptr_t)addr & ~(uintptr_t)63, end = (uintptr_t)addr + len;

    for (; p < end; p += 64)
        __asm__ volatile("clflush (%0)" ::"r"(p) : "memory");
    __asm__ volatile("mfence" ::: "memory");
}

static u32 crc_table[256];

static void crc_init(void)
{
    for (u32 i = 0; i < 256; i++) {
        u32 c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static unsigned long crc32_of(const unsigned char *p, size_t n)
{
    u32 c = 0xFFFFFFFFu;

    while (n--)
        c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* the seeded payload: splitmix64 seeds xoroshiro128+; each output gives one 4-byte word */
static void pattern(unsigned char *buf, size_t len, u32 seed)
{
    u64 s[2], x = seed;

    for (int i = 0; i < 2; i++) {
        u64 z = (x += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        s[i] = z ^ (z >> 31);
    }
    for (size_t off = 0; off < len; off += 4) {
        u64 s0 = s[0], s1 = s[1];
        u32 word = (u32)(s0 + s1);
        size_t n = len - off < 4 ? len - off : 4;

        memcpy(buf + off, &word, n);
        s1 ^= s0;
        s[0] = ((s0 << 55) | (s0 >> 9)) ^ s1 ^ (s1 << 14);
        s[1] = (s1 << 36) | (s1 >> 28);
    }
}

static void *map_at(int fd, u64 offset, u64 size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)offset);

    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    return p;
}

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    struct pcq *q;
    struct pcq_consumer *c;
    u64 poff, psize, coff, csize;
    double deadline;
    int fd;

    if (argc == 2 && !strcmp(argv[1], "layout")) {
        printf("producer_index %zu next_seq %zu pcq_size %zu end %zu\n",
               offsetof(struct pcq, producer_index), offsetof(struct pcq, next_seq),
               offsetof(struct pcq, pcq_size), sizeof(struct pcq));
        printf("consumer_index %zu next_seq %zu pcqc_size %zu end %zu\n",
               offsetof(struct pcq_consumer, consumer_index),
               offsetof(struct pcq_consumer, next_seq),
               offsetof(struct pcq_consumer, pcqc_size), sizeof(struct pcq_consumer));
        printf("crc %zu\n", sizeof(unsigned long));
        return 0;
    }
    if (argc != 9 && argc != 10) {
        fprintf(stderr, "usage: see the comment at the top of pcq_peer.c\n");
        return 2;
    }
    crc_init();
    fd = open(argv[2], O_RDWR);
    if (fd < 0) {
        perror(argv[2]);
        return 2;
    }
    poff = strtoull(argv[3], NULL, 0);
    psize = strtoull(argv[4], NULL, 0);
    coff = strtoull(argv[5], NULL, 0);
    csize = strtoull(argv[6], NULL, 0);
    q = map_at(fd, poff, psize);
    c = map_at(fd, coff, csize);
    deadline = now() + 120;

    if (!strcmp(argv[1], "create")) {
        c->pcq_consumer_magic = PCQ_CONSUMER_MAGIC;
        c->consumer_index = 0;
        c->next_seq = 0;
        c->pcqc_size = csize;
        flush(c, sizeof(*c));
        q->pcq_magic = PCQ_MAGIC;
        q->nbuckets = strtoull(argv[7], NULL, 0);
        q->bucket_size = strtoull(argv[8], NULL, 0);
        q->bucket_array_offset = 2 << 20;
        q->producer_index = 0;
        q->next_seq = 0;
        q->pcq_size = psize;
        flush(q, sizeof(*q));
        return 0;
    }

    u64 n = strtoull(argv[7], NULL, 0), bsize = q->bucket_size, nb = q->nbuckets;
    u32 seed = (u32)strtoull(argv[8], NULL, 0);
    size_t payload = bsize - sizeof(u64) - sizeof(unsigned long);
    unsigned char *entry = calloc(1, bsize), *expect = calloc(1, bsize);
    unsigned char *buckets = (unsigned char *)q + q->bucket_array_offset;
    u64 done = 0, errors = 0;

    if (q->pcq_magic != PCQ_MAGIC || c->pcq_consumer_magic != PCQ_CONSUMER_MAGIC) {
        fprintf(stderr, "pcq_peer: bad magic\n");
        return 1;
    }
    if (seed)
        pattern(expect, payload, seed);

    if (!strcmp(argv[1], "produce")) {
        memcpy(entry, expect, payload);
        for (; done < n; done++) {
            u64 put = q->producer_index, seq;

            while ((put + 1) % nb == c->consumer_index) {
                flush(&c->consumer_index, sizeof(c->consumer_index));
                if (now() > deadline)
                    return 3;
                sched_yield();
            }
            seq = q->next_seq++;
            memcpy(entry + payload, &seq, sizeof(seq));
            unsigned long crc = crc32_of(entry, payload + sizeof(seq));
            memcpy(entry + payload + sizeof(seq), &crc, sizeof(crc));
            memcpy(buckets + put * bsize, entry, bsize);
            flush(buckets + put * bsize, bsize);
            q->producer_index = (put + 1) % nb;
            flush(&q->producer_index, sizeof(q->producer_index));
        }
        flush(&q->next_seq, sizeof(q->next_seq));
        printf("sent %llu\n", (unsigned long long)done);
        return 0;
    }

    if (!strcmp(argv[1], "consume")) {
        for (; done < n; done++) {
            u64 get = c->consumer_index, seq, expect_seq = c->next_seq++;
            unsigned long crc;

            for (;;) {
                flush(&q->producer_index, sizeof(q->producer_index));
                if (q->producer_index != get)
                    break;
                if (now() > deadline)
                    return 3;
                sched_yield();
            }
            flush(buckets + get * bsize, bsize);
            memcpy(entry, buckets + get * bsize, bsize);
            memcpy(&seq, entry + payload, sizeof(seq));
            memcpy(&crc, entry + payload + sizeof(seq), sizeof(crc));
            if (crc != crc32_of(entry, payload + sizeof(seq)) || seq != expect_seq ||
                memcmp(entry, expect, payload) != 0) {
                fprintf(stderr, "pcq_peer: bad message at seq %llu\n",
                        (unsigned long long)expect_seq);
                errors++;
            }
            c->consumer_index = (get + 1) % nb;
            flush(&c->consumer_index, sizeof(c->consumer_index));
        }
        flush(&c->next_seq, sizeof(c->next_seq));
        printf("received %llu errors %llu\n", (unsigned long long)done,
               (unsigned long long)errors);
        return errors ? 1 : 0;
    }
    fprintf(stderr, "pcq_peer: unknown mode %s\n", argv[1]);
    return 2;
}
