from expertline.cli import main

main()
