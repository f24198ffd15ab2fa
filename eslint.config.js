import neostandard from 'neostandard'

export default [
  ...neostandard({ ts: true, ignores: ['dist/**', 'node_modules/**', 'test/artifacts/**'] }),
  {
    files: ['example/public/**/*.js'],
    languageOptions: { globals: { location: 'readonly', document: 'readonly', window: 'readonly', fetch: 'readonly' } }
  },
  {
    files: ['lib/**/*.ts'],
    rules: { 'no-console': 'error' }
  }
]
