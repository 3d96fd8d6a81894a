// SPDX-License-Identifier: GPL-2.0
/*
 * kstls_kbench.c - /dev/kstls_kbench, a benchmark-only misc device (never shipped) whose ioctls
 * each do one of the primitives the kstls strict path (GET_ADDR) is made of, so that the
 * benchmark can time them, from user space, on the very kernel it measures kstls on:
 *
 *   KBENCH_NOP        nothing (the ioctl floor of a C misc device)
 *   KBENCH_COPY_IN    copy_from_user() of 16 bytes (the tls_index)
 *   KBENCH_COPY_OUT   put_user() of 8 bytes (the address)
 *   KBENCH_MUTEX      mutex_lock() + mutex_unlock() (the context's lock)
 *   KBENCH_SPINLOCK   spin_lock() + spin_unlock()
 *   KBENCH_RCU        rcu_read_lock() + rcu_read_unlock()
 *   KBENCH_SKELETON   copy-in, mutex, copy-out: GET_ADDR without its lookups
 *
 * On a debug kernel (lockdep, DEBUG_MUTEXES) the lock primitives are what changes most.
 */
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>

#define KBENCH_MAGIC	0xBA
#define KBENCH_NOP	_IO(KBENCH_MAGIC, 0)
#define KBENCH_COPY_IN	_IOW(KBENCH_MAGIC, 1, __u64[2])
#define KBENCH_COPY_OUT	_IOR(KBENCH_MAGIC, 2, __u64)
#define KBENCH_MUTEX	_IO(KBENCH_MAGIC, 3)
#define KBENCH_SPINLOCK	_IO(KBENCH_MAGIC, 4)
#define KBENCH_RCU	_IO(KBENCH_MAGIC, 5)
#define KBENCH_SKELETON	_IOWR(KBENCH_MAGIC, 6, __u64[3])

static DEFINE_MUTEX(kbench_mutex);
static DEFINE_SPINLOCK(kbench_lock);
static u64 kbench_counter;

static long kbench_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	void __user *uarg = (void __user *)arg;
	u64 in[2];

	switch (cmd) {
	case KBENCH_NOP:
		return 0;
	case KBENCH_COPY_IN:
		return copy_from_user(in, uarg, sizeof(in)) ? -EFAULT : 0;
	case KBENCH_COPY_OUT:
		return put_user(kbench_counter, (u64 __user *)uarg);
	case KBENCH_MUTEX:
		mutex_lock(&kbench_mutex);
		kbench_counter++;
		mutex_unlock(&kbench_mutex);
		return 0;
	case KBENCH_SPINLOCK:
		spin_lock(&kbench_lock);
		kbench_counter++;
		spin_unlock(&kbench_lock);
		return 0;
	case KBENCH_RCU:
		rcu_read_lock();
		kbench_counter++;
		rcu_read_unlock();
		return 0;
	case KBENCH_SKELETON:
		if (copy_from_user(in, uarg, sizeof(in)))
			return -EFAULT;
		mutex_lock(&kbench_mutex);
		kbench_counter += in[0] + in[1];
		mutex_unlock(&kbench_mutex);
		return put_user(in[0] + in[1], (u64 __user *)uarg + 2);
	}
	return -ENOTTY;
}

static const struct file_operations kbench_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = kbench_ioctl,
};

static struct miscdevice kbench_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "kstls_kbench",
	.fops = &kbench_fops,
};

module_misc_device(kbench_dev);
MODULE_DESCRIPTION("kstls benchmark: timeable kernel primitives (benchmark only)");
MODULE_LICENSE("GPL");
