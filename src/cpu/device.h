#ifndef DSV4_CPU_DEVICE_H
#define DSV4_CPU_DEVICE_H
/* Online CPU count (>= 1): the default worker count of the CPU backend. */
int dsv4_cpu_thread_count(void);
#endif
