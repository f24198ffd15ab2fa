// `npm run example`: the chat on http://127.0.0.1:3000 (PORT to change it). With EXAMPLE_REDIS_URL set, the
// instances on that Redis share rooms: run a second one with PORT=3001.
import closeWithGrace from 'close-with-grace'
import { buildExample } from './app.js'

const { app, listen } = await buildExample({ redisUrl: process.env.EXAMPLE_REDIS_URL })

closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
  if (err !== undefined) app.log.error({ err }, 'closing after an error')
  else app.log.info({ signal }, 'closing')
  await app.close()
})

const port = await listen(Number(process.env.PORT ?? 3000))
app.log.info(`fastify-realtime example chat: open http://127.0.0.1:${port}`)
