from mcmdpo.tiny.checkpoints import main

main()
