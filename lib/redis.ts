// fastify-realtime/redis: rooms, users and broadcasts across instances. A separate entry, so that only apps that
// use it load ioredis (an optional peer dependency).
export { redisBroker, type RedisBrokerOptions, type IoredisClient, type RedisClusterNode } from './broker/redis.js'
