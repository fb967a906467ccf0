/* DHCP load generator for bench/dhcp: full DISCOVER/OFFER/REQUEST/ACK
 * exchanges with random MACs, `inflight` at once, broadcast flag set so every
 * reply comes back to port 68 on this interface whatever address it offers.
 *
 * usage: loadgen IFACE COUNT INFLIGHT MAX_SECONDS SEED
 * prints one JSON line: {"done":N,"seconds":S,"rate":R,"timeouts":T,"naks":K}
 * Compiled by bench/dhcp/run.py with gcc at run time.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXSLOTS 1024
#define TIMEOUT 2.0

struct slot {
    int state; /* 0 idle, 1 discover sent, 2 request sent */
    uint32_t xid;
    uint8_t mac[6];
    double sent;
};

static struct slot slots[MAXSLOTS];
static uint64_t rng;

static uint64_t next_rand(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return rng;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int build(uint8_t *p, int type, struct slot *s, const uint8_t *yiaddr, const uint8_t *sid) {
    memset(p, 0, 300);
    p[0] = 1; p[1] = 1; p[2] = 6;
    uint32_t x = htonl(s->xid);
    memcpy(p + 4, &x, 4);
    p[10] = 0x80; /* broadcast flag */
    memcpy(p + 28, s->mac, 6);
    p[236] = 99; p[237] = 130; p[238] = 83; p[239] = 99;
    int i = 240;
    p[i++] = 53; p[i++] = 1; p[i++] = (uint8_t)type;
    if (type == 3) {
        p[i++] = 50; p[i++] = 4; memcpy(p + i, yiaddr, 4); i += 4;
        p[i++] = 54; p[i++] = 4; memcpy(p + i, sid, 4); i += 4;
    }
    p[i++] = 55; p[i++] = 4; p[i++] = 1; p[i++] = 3; p[i++] = 6; p[i++] = 15;
    p[i++] = 255;
    return 300;
}

static struct sockaddr_in dst;
static int fd;
static long timeouts, naks, sent_pkts;

static void send_pkt(int type, struct slot *s, const uint8_t *yiaddr, const uint8_t *sid) {
    uint8_t buf[300];
    int n = build(buf, type, s, yiaddr, sid);
    if (sendto(fd, buf, n, 0, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EAGAIN) {
        perror("sendto");
    }
    sent_pkts++;
    s->sent = now();
}

static uint32_t seq;

static void start(int k) {
    struct slot *s = &slots[k];
    uint64_t r = next_rand();
    for (int j = 0; j < 6; j++) s->mac[j] = (uint8_t)(r >> (8 * j));
    s->mac[0] = (s->mac[0] & 0xfe) | 0x02;
    s->xid = (++seq << 10) | (uint32_t)k;
    s->state = 1;
    send_pkt(1, s, NULL, NULL);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: loadgen IFACE COUNT INFLIGHT MAX_SECONDS SEED\n");
        return 2;
    }
    const char *ifname = argv[1];
    long count = atol(argv[2]);
    int inflight = atoi(argv[3]);
    double max_seconds = atof(argv[4]);
    rng = strtoull(argv[5], NULL, 10) * 2654435761ULL + 88172645463325252ULL;
    if (inflight < 1 || inflight > MAXSLOTS) inflight = 64;

    fd = socket(AF_INET, SOCK_DGRAM, 0);
    int one = 1, big = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
    if (setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, ifname, strlen(ifname)) < 0) {
        perror("SO_BINDTODEVICE");
        return 1;
    }
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(68)};
    if (bind(fd, (struct sockaddr *)&me, sizeof me) < 0) {
        perror("bind");
        return 1;
    }
    dst.sin_family = AF_INET;
    dst.sin_port = htons(67);
    dst.sin_addr.s_addr = htonl(INADDR_BROADCAST);

    long done = 0, active = 0;
    double t0 = now(), deadline = t0 + max_seconds;
    for (int k = 0; k < inflight && active < count; k++) { start(k); active++; }
    uint8_t buf[1500];
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    while (done < count && now() < deadline) {
        poll(&pfd, 1, 5);
        for (;;) {
            ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n < 0) break;
            if (n < 244 || buf[0] != 2) continue;
            uint32_t xid;
            memcpy(&xid, buf + 4, 4);
            xid = ntohl(xid);
            int k = xid & 1023;
            if (k >= inflight || slots[k].xid != xid || slots[k].state == 0) continue;
            int type = 0;
            uint8_t sid[4] = {0};
            for (ssize_t i = 240; i + 1 < n;) {
                uint8_t c = buf[i];
                if (c == 255) break;
                if (c == 0) { i++; continue; }
                uint8_t l = buf[i + 1];
                if (i + 2 + l > n) break;
                if (c == 53 && l == 1) type = buf[i + 2];
                if (c == 54 && l == 4) memcpy(sid, buf + i + 2, 4);
                i += 2 + l;
            }
            struct slot *s = &slots[k];
            if (type == 2 && s->state == 1) {
                s->state = 2;
                send_pkt(3, s, buf + 16, sid);
            } else if (type == 5 && s->state == 2) {
                done++;
                active--;
                s->state = 0;
                if (done + active < count) { start(k); active++; }
            } else if (type == 6) {
                naks++;
                active--;
                s->state = 0;
                if (done + active < count) { start(k); active++; }
            }
        }
        double t = now();
        for (int k = 0; k < inflight; k++) {
            if (slots[k].state && t - slots[k].sent > TIMEOUT) {
                timeouts++;
                start(k); /* a fresh exchange with a new MAC */
            }
        }
    }
    double secs = now() - t0;
    printf("{\"done\": %ld, \"seconds\": %.4f, \"rate\": %.1f, \"timeouts\": %ld, \"naks\": %ld}\n",
           done, secs, secs > 0 ? done / secs : 0.0, timeouts, naks);
    return 0;
}
